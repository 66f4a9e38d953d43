#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <grp.h>
#include <unistd.h>

/* The daemon's descriptors and what it writes to the first (pause.go). */
#define CONFIG_FD 3
#define ERR_FD 4

struct config {
	uint32_t uid, gid;
	/* One more than the kernel takes, to tell a filter that is too long. */
	struct sock_filter filter[BPF_MAXINSNS + 1];
};

static void fail(const char *what) {
	dprintf(ERR_FD, "pause: %s: %s", what, strerror(errno));
	_exit(126);
}

/* readConfig reads CONFIG_FD to its end and returns the filter's length. */
static unsigned short readConfig(struct config *c) {
	const size_t head = offsetof(struct config, filter);
	size_t got = 0;
	ssize_t n;

	do {
		n = read(CONFIG_FD, (char *)c + got, sizeof(*c) - got);
		if (n < 0 && errno != EINTR)
			fail("read the configuration");
		got += n > 0 ? n : 0;
	} while (n != 0 && got < sizeof(*c));
	errno = EINVAL;
	if (got == sizeof(*c) || got <= head || (got - head) % sizeof(c->filter[0]) != 0)
		fail("configuration of a wrong size");
	return (got - head) / sizeof(c->filter[0]);
}

/* confine makes the pause a process that leads nowhere: an empty read-only
 * root, no capabilities, an unprivileged user, no_new_privs, not dumpable,
 * the seccomp filter, no descriptor. A container sharing its pid namespace
 * reaches it as PID 1 through /proc/1/{root,cwd,mountinfo,net,fd}. */
static void confine(void) {
	static struct config c;
	struct sock_fprog prog = {.len = readConfig(&c), .filter = c.filter};
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct none[2] = {0};
	int cap;

	/* A copy of the daemon's mount namespace (CLONE_NEWNS): nothing done
	 * to it may reach the host's. Any directory of the old root can hold
	 * the new one; /proc exists on every host and is not needed again. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		fail("make mounts private");
	if (mount("tmpfs", "/proc", "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0555") < 0)
		fail("mount an empty root");
	if (chdir("/proc") < 0)
		fail("enter the empty root");
	/* The old root is stacked on the new one, and "." unmounts it. */
	if (syscall(SYS_pivot_root, ".", ".") < 0)
		fail("pivot_root");
	if (umount2(".", MNT_DETACH) < 0)
		fail("unmount the old root");
	if (chdir("/") < 0)
		fail("chdir /");

	if (setgroups(0, NULL) < 0)
		fail("setgroups");
	if (setresgid(c.gid, c.gid, c.gid) < 0)
		fail("setresgid");
	for (cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
			fail("drop a bounding capability");
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
		fail("clear ambient capabilities");
	if (setresuid(c.uid, c.uid, c.uid) < 0)
		fail("setresuid");
	/* setuid clears the permitted and effective sets of a non-root user
	 * only; this clears them for uid 0 as well, and the inheritable set. */
	if (syscall(SYS_capset, &hdr, none) < 0)
		fail("clear capabilities");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail("set no_new_privs");
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		fail("clear dumpable");
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0)
		fail("load the seccomp filter");
	/* The last step: closing ERR_FD tells the daemon all went well. */
	if (close_range(0, ~0U, 0) < 0)
		fail("close descriptors");
}

/* hold is a process that only lives while package sandbox pins the
 * namespaces it was born in (a pod's user namespace and the net, uts and ipc
 * namespaces it owns): it waits for the end of its stdin and exits. */
static void hold(void) {
	char c;
	ssize_t n;

	do
		n = read(0, &c, 1);
	while (n > 0 || (n < 0 && errno == EINTR));
	_exit(0);
}

void criMiniPause(void) {
	sigset_t set;
	int sig;

	if (getenv("_CRI_MINI_POD_HOLD") != NULL)
		hold();
	if (getenv("_CRI_MINI_POD_PAUSE") == NULL)
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	confine();
	for (;;) {
		sig = sigwaitinfo(&set, NULL);
		if (sig == SIGTERM || sig == SIGINT)
			_exit(0);
		if (sig == SIGCHLD)
			while (waitpid(-1, NULL, WNOHANG) > 0)
				;
	}
}
