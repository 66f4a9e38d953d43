#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
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

/* becomeRoot makes the process the root of the user namespace it has just
 * joined. setns gives it every capability there but leaves its ids, the
 * host's root, which the namespace does not map: files it made would belong
 * to nobody inside, and to the host's root on disk. */
static void becomeRoot(void) {
	if (setgroups(0, NULL) < 0)
		fail("setgroups in the user namespace");
	if (setresgid(0, 0, 0) < 0)
		fail("setresgid 0 in the user namespace");
	if (setresuid(0, 0, 0) < 0)
		fail("setresuid 0 in the user namespace");
}

/* joinAll joins the namespaces of the descriptors fds (closing them), a
 * user namespace first: the others are owned by it, and setns checks the
 * capabilities for them in the user namespace the process will live in. */
static void joinAll(int *fds, int n) {
	int pass, i, user;

	for (pass = 0; pass < 2; pass++) {
		for (i = 0; i < n; i++) {
			if (fds[i] < 0)
				continue;
			user = ioctl(fds[i], NS_GET_NSTYPE) == CLONE_NEWUSER;
			if (user != (pass == 0))
				continue;
			if (setns(fds[i], 0) < 0)
				fail(user ? "join the user namespace" : "join a namespace");
			if (user)
				becomeRoot();
			close(fds[i]);
			fds[i] = -1;
		}
	}
}

/* nsinit starts a container's init (container/supervisor.go): it joins the
 * namespaces whose descriptors _CRI_MINI_NSINIT_JOIN lists (comma-separated),
 * unshares the new ones of the clone flags in flags, and forks the init,
 * which is born in all of them (PID 1 of a new pid namespace) and goes on to
 * start Go. This process writes the init's pid to the descriptor in
 * _CRI_MINI_NSINIT_REPORT (or why it failed) and exits; the supervisor, a
 * child subreaper meanwhile, adopts the init. With a user namespace among
 * the joined ones, the new namespaces are owned by it. */
static void nsinit(const char *flags) {
	int fds[16], n = 0;
	const char *s = getenv("_CRI_MINI_NSINIT_REPORT");
	char *end;
	pid_t child;

	if (s == NULL)
		_exit(126);
	errfd = atoi(s);
	for (s = getenv("_CRI_MINI_NSINIT_JOIN"); s != NULL && *s != '\0'; s = *end ? end + 1 : end) {
		errno = E2BIG;
		if (n == (int)(sizeof(fds) / sizeof(fds[0])))
			fail("namespaces to join");
		fds[n++] = (int)strtol(s, &end, 10);
	}
	joinAll(fds, n);
	if (unshare((int)strtol(flags, NULL, 10)) < 0)
		fail("new namespaces");
	child = fork();
	if (child < 0)
		fail("fork the init");
	if (child == 0) {
		close(errfd);
		errfd = -1;
		return;
	}
	dprintf(errfd, "%d", child);
	_exit(0);
}

void criMiniNsenter(void) {
	static const char *types[] = {"user", "cgroup", "ipc", "uts", "net", "pid", "mnt"};
	enum { ntypes = sizeof(types) / sizeof(types[0]), userIdx = 0, pidIdx = 5 };
	int fds[ntypes];
	char path[64];
	const char *pid = getenv("_CRI_MINI_NSENTER_PID");
	const char *s;
	int i, status, samePid;
	pid_t child, self, daemon;
	struct stat own, target;
	char go;

	if (pid == NULL) {
		s = getenv("_CRI_MINI_NSINIT");
		if (s != NULL)
			nsinit(s);
		return;
	}
	s = getenv("_CRI_MINI_NSENTER_ERR");
	if (s != NULL)
		errfd = atoi(s);
	/* The daemon waits on this process and enforces the exec's timeout:
	 * this process dies with it, and its child with this one, so nothing
	 * an exec started runs on unwatched. A daemon that died before the
	 * signal was armed has left this process to another parent. */
	s = getenv("_CRI_MINI_NSENTER_PPID");
	daemon = s != NULL ? atoi(s) : -1;
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		fail("set the parent-death signal");
	if (getppid() != daemon) {
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
	for (i = 0; i < ntypes; i++) {
		snprintf(path, sizeof(path), "/proc/%s/ns/%s", pid, types[i]);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			fail(path);
	}
	/* A container in the host's user namespace is joined in every other:
	 * setns into the user namespace one is in already is an error. */
	if (stat("/proc/self/ns/user", &own) < 0 || fstat(fds[userIdx], &target) < 0)
		fail("compare user namespaces");
	if (own.st_dev == target.st_dev && own.st_ino == target.st_ino) {
		close(fds[userIdx]);
		fds[userIdx] = -1;
	}
	/* A container on the host's pid namespace (hostPID) sees this
	 * process as its child's parent; any other sees none (pid 0). */
	if (stat("/proc/self/ns/pid", &own) < 0 || fstat(fds[pidIdx], &target) < 0)
		fail("compare pid namespaces");
	samePid = own.st_dev == target.st_dev && own.st_ino == target.st_ino;
	self = getpid();
	joinAll(fds, ntypes);
	/* Becoming root of a user namespace changed our ids, which clears the
	 * parent-death signal: armed again, and the daemon checked again. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
		fail("set the parent-death signal again");
	if (getppid() != daemon) {
		errno = ESRCH;
		fail("the daemon is gone");
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
