#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static int errfd = -1;

static void fail(const char *what) {
	char msg[256];
	int n = snprintf(msg, sizeof(msg), "nsenter: %s: %s", what, strerror(errno));
	if (errfd >= 0 && n > 0 && write(errfd, msg, (size_t)n) < 0) {
		/* nothing more to report to */
	}
	_exit(126);
}

void criMiniNsenter(void) {
	static const char *types[] = {"cgroup", "ipc", "uts", "net", "pid", "mnt"};
	int fds[6];
	char path[64];
	const char *pid = getenv("_CRI_MINI_NSENTER_PID");
	const char *s;
	int i, status, samePid;
	pid_t child, self;
	struct stat own, target;
	char go;

	if (pid == NULL)
		return;
	s = getenv("_CRI_MINI_NSENTER_ERR");
	if (s != NULL)
		errfd = atoi(s);
	/* The daemon waits on this process and enforces the exec's timeout:
	 * this process dies with it, and its child with this one, so nothing
	 * an exec started runs on unwatched. A daemon that died before the
	 * signal was armed has left this process to another parent. */
	s = getenv("_CRI_MINI_NSENTER_PPID");
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		fail("set the parent-death signal");
	if (s == NULL || getppid() != atoi(s)) {
		errno = ESRCH;
		fail("the daemon is gone");
	}
	s = getenv("_CRI_MINI_NSENTER_SYNC");
	if (s == NULL || read(atoi(s), &go, 1) != 1)
		fail("wait for the parent");
	/* Descriptors 0-5 are stdio and the exec role's sync, error and
	 * control descriptors (container/exec.go). Before Go starts nothing
	 * else is anyone's: whatever the daemon passed on by mistake is
	 * closed here, not only marked, so that neither this process nor the
	 * child that enters the container holds it. */
	if (close_range(6, ~0U, 0) < 0)
		fail("close inherited descriptors");

	/* Open them all first: after joining the mount namespace, /proc is the
	 * container's and the pid no longer names the init. */
	for (i = 0; i < 6; i++) {
		snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, types[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fail(path);
	}
	/* A container on the host's pid namespace (hostPID) sees this
	 * process as its child's parent; any other sees none (pid 0). */
	if (stat("/proc/self/ns/pid", &own) < 0 || fstat(fds[4], &target) < 0)
		fail("compare pid namespaces");
	samePid = own.st_dev == target.st_dev && own.st_ino == target.st_ino;
	self = getpid();
	for (i = 0; i < 6; i++) {
		if (setns(fds[i], 0) < 0)
			fail(types[i]);
		close(fds[i]);
	}
	child = fork();
	if (child < 0)
		fail("fork");
	if (child == 0) {
		/* Not to outlive the parent the daemon waits on. That parent is
		 * outside this pid namespace and reads as pid 0 (or, on the
		 * host's, as itself); had it died already, the reaper would be
		 * the parent. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
			fail("set the parent-death signal");
		if (getppid() != (samePid ? self : 0)) {
			errno = ESRCH;
			fail("the exec's parent is gone");
		}
		return;
	}
	while (waitpid(child, &status, 0) < 0) {
		if (errno != EINTR)
			fail("wait");
	}
	if (WIFEXITED(status))
		_exit(WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		_exit(128 + WTERMSIG(status));
	_exit(255);
}
