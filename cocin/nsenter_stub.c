/*
 * nsenter_stub.c - the tiny helper behind `cocin exec`.
 *
 * Usage:
 *     nsenter_stub PID CWD [--] ARGV0 [ARGS...]
 *
 * It runs ARGV0 (with ARGS) inside the namespaces of the running process
 * PID -- normally the container's init -- much like `docker exec`.
 *
 * Why C and not Python?  setns(CLONE_NEWPID) only affects *children*
 * created afterwards, and setns(CLONE_NEWNS) refuses to work in a
 * multi-threaded process.  A small, single-threaded, statically linked
 * program is the simplest reliable way to do it, and being static it does
 * not care which libc (if any) lives inside the container.
 *
 * What it does, step by step:
 *   1. Validate arguments.  Usage errors -> one line on stderr, exit 125.
 *   2. Open /proc/PID/ns/{ipc,uts,net,pid,cgroup,mnt} and /proc/PID/root
 *      -- ALL fds first, because once we join the mount namespace the
 *      /proc we see is the container's and "PID" would mean nothing.
 *      A namespace we already share with PID is skipped (setns into your
 *      own namespace can fail; util-linux nsenter skips them the same way).
 *   3. setns() into each one, the mount namespace last, then chroot into
 *      the target's root directory (/proc/PID/root, opened in step 2) so a
 *      chroot()ed container works as well as a pivot_root()ed one.
 *   4. fork(): only the child really lives in the PID namespace.
 *      Child : chdir(CWD), look ARGV0 up in $PATH, execve().
 *      Parent: forward signals to the child, wait, exit with its status.
 *
 * Things the stub deliberately does NOT do:
 *   - environment: our own environ is passed to execve unchanged (the
 *     Python caller builds the container environment and hands it to us);
 *   - cgroups: the caller joins the container's cgroup before exec'ing
 *     us, and cgroup membership is inherited by our child;
 *   - terminals: fds 0,1,2 are simply inherited (the caller sets up a pty
 *     for `exec -t` if it wants one);
 *   - shells: the command is an argv vector, never a shell string.
 *
 * Exit codes (the same convention as `docker exec` / `docker run`):
 *   125  cocin's own failure (bad usage, no such PID, setns/chdir failed)
 *   126  command found but could not be executed (EACCES, ENOEXEC,
 *        missing "#!" interpreter, ...)
 *   127  command not found
 *   N    the command's own exit status
 *   128+S  the command was killed by signal S
 *
 * Build: scripts/build_stub.sh (gcc -static -Os -Wall -Wextra, stripped).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_COCIN     125  /* our own failure            */
#define EXIT_CANNOT    126  /* found but not executable   */
#define EXIT_NOTFOUND  127  /* command not found          */

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

extern char **environ;

/* Print "cocin: error: <message>" on stderr and exit with `code`. */
static void die(int code, const char *fmt, ...)
{
    va_list ap;

    fputs("cocin: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

/* ------------------------------------------------------------------ */
/* Step 2 + 3: namespaces                                              */
/* ------------------------------------------------------------------ */

/*
 * The namespaces we join, in the order we join them.  The mount namespace
 * must be the last one: joining it changes what "/proc" means for us.
 * (The fds are all opened before the first setns anyway.)
 */
static struct ns {
    const char *name;   /* file name under /proc/PID/ns/          */
    int type;           /* CLONE_NEW* flag passed to setns()       */
    int optional;       /* missing on old kernels: just skip it    */
    int fd;             /* open fd, or -1 if we do not join it     */
} namespaces[] = {
    { "ipc",    CLONE_NEWIPC,    0, -1 },
    { "uts",    CLONE_NEWUTS,    0, -1 },
    { "net",    CLONE_NEWNET,    0, -1 },
    { "pid",    CLONE_NEWPID,    0, -1 },
    { "cgroup", CLONE_NEWCGROUP, 1, -1 },
    { "mnt",    CLONE_NEWNS,     0, -1 },
};
#define N_NS (sizeof(namespaces) / sizeof(namespaces[0]))

/*
 * Open /proc/PID/ns/NAME (relative to procfd, an fd on /proc/PID) unless
 * it is the very same namespace we are already in.  Two namespace files
 * refer to the same namespace exactly when st_dev and st_ino match.
 */
static void open_ns(int procfd, const char *pid, struct ns *ns)
{
    char path[64];
    struct stat target, self;
    int fd;

    snprintf(path, sizeof(path), "ns/%s", ns->name);
    fd = openat(procfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT && ns->optional)
            return;
        die(EXIT_COCIN, "cannot open /proc/%s/%s: %s", pid, path, strerror(errno));
    }
    if (fstat(fd, &target) < 0)
        die(EXIT_COCIN, "cannot stat /proc/%s/%s: %s", pid, path, strerror(errno));

    snprintf(path, sizeof(path), "/proc/self/ns/%s", ns->name);
    if (stat(path, &self) == 0 &&
        self.st_dev == target.st_dev && self.st_ino == target.st_ino) {
        close(fd);              /* already there: nothing to join */
        return;
    }
    ns->fd = fd;
}

static void enter_namespaces(const char *pid)
{
    char path[64];
    int procfd, rootfd;
    size_t i;

    /*
     * Hold /proc/PID open as a directory and open everything relative to
     * it: if the process exits and its number is reused meanwhile, openat()
     * fails instead of silently opening some other process's files.
     */
    snprintf(path, sizeof(path), "/proc/%s", pid);
    procfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (procfd < 0) {
        if (errno == ENOENT)
            die(EXIT_COCIN, "no such process: %s", pid);
        die(EXIT_COCIN, "cannot access process %s: %s", pid, strerror(errno));
    }

    /* 2. open every fd first ... */
    for (i = 0; i < N_NS; i++)
        open_ns(procfd, pid, &namespaces[i]);
    rootfd = openat(procfd, "root", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (rootfd < 0)
        die(EXIT_COCIN, "cannot open /proc/%s/root: %s", pid, strerror(errno));
    close(procfd);

    /* 3. ... then join them, mnt last (it is last in the table). */
    for (i = 0; i < N_NS; i++) {
        struct ns *ns = &namespaces[i];

        if (ns->fd < 0)
            continue;
        if (setns(ns->fd, ns->type) < 0)
            die(EXIT_COCIN, "cannot join %s namespace of %s: %s",
                ns->name, pid, strerror(errno));
        close(ns->fd);
        ns->fd = -1;
    }

    /*
     * Joining a mount namespace puts our root at the namespace's root
     * mount.  If the container was set up with chroot() instead of
     * pivot_root(), its "/" is somewhere below that, so adopt the
     * target's own root directory explicitly (nsenter --root does this).
     */
    if (fchdir(rootfd) < 0 || chroot(".") < 0)
        die(EXIT_COCIN, "cannot enter root directory of %s: %s", pid, strerror(errno));
    close(rootfd);
}

/* ------------------------------------------------------------------ */
/* Step 4, child side: find and exec the command                        */
/* ------------------------------------------------------------------ */

/* execve() failed with `err` for `file`: report it Docker-style and exit. */
static void exec_failed(const char *file, int err)
{
    /*
     * ENOENT although the file is there means the kernel could not find
     * the *interpreter* named on its "#!" line (or its ELF loader).
     */
    if (err == ENOENT && access(file, F_OK) == 0)
        die(EXIT_CANNOT, "exec: \"%s\": bad interpreter: %s", file, strerror(err));
    if (err == ENOENT || err == ENOTDIR)
        die(EXIT_NOTFOUND, "exec: \"%s\": %s", file, strerror(err));
    die(EXIT_CANNOT, "exec: \"%s\": %s", file, strerror(err));
}

/*
 * Like execvp(), written out so the rules are visible:
 *   - a name containing '/' is executed as is;
 *   - otherwise try each directory of $PATH in order (an empty entry
 *     means the current directory); "does not exist" means keep looking,
 *     "permission denied" is remembered but we keep looking, anything
 *     else (e.g. ENOEXEC: not a valid executable) stops the search.
 * $PATH comes from the environment we pass on, i.e. the container's.
 * We are inside the container's mount namespace, so every path below
 * is looked up in the container's filesystem.
 */
static void run_command(char **argv)
{
    const char *name = argv[0];
    const char *path, *p;
    char full[PATH_MAX];
    char denied[PATH_MAX] = "";
    size_t namelen = strlen(name);

    if (strchr(name, '/') != NULL) {
        execve(name, argv, environ);
        exec_failed(name, errno);
    }

    path = getenv("PATH");
    if (path == NULL)
        path = DEFAULT_PATH;

    for (p = path; name[0] != '\0'; p++) {
        const char *end = strchrnul(p, ':');
        size_t dirlen = (size_t)(end - p);

        if (dirlen + 1 + namelen + 1 <= sizeof(full)) {
            if (dirlen == 0) {          /* "" in PATH means "." */
                memcpy(full, name, namelen + 1);
            } else {
                memcpy(full, p, dirlen);
                full[dirlen] = '/';
                memcpy(full + dirlen + 1, name, namelen + 1);
            }
            execve(full, argv, environ);
            if (errno == ENOENT && access(full, F_OK) == 0)
                exec_failed(full, errno);   /* exists: bad "#!" line */
            switch (errno) {
            case ENOENT:
            case ENOTDIR:
            case ENAMETOOLONG:
            case ELOOP:
            case ESTALE:
                break;                  /* not here: keep looking */
            case EACCES:
                if (denied[0] == '\0')
                    strcpy(denied, full);
                break;                  /* remember, keep looking */
            default:
                exec_failed(full, errno);   /* found but unusable */
            }
        }
        if (*end == '\0')
            break;
        p = end;
    }

    if (denied[0] != '\0')
        exec_failed(denied, EACCES);
    die(EXIT_NOTFOUND, "exec: \"%s\": executable file not found in $PATH", name);
}

/* ------------------------------------------------------------------ */
/* Step 4, parent side: forward signals, wait, pass the status on       */
/* ------------------------------------------------------------------ */

static const int forwarded[] = {
    SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
};
#define N_FWD (sizeof(forwarded) / sizeof(forwarded[0]))

static volatile pid_t child_pid;

static void forward_signal(int sig)
{
    int saved = errno;          /* handlers must not clobber errno */

    if (child_pid > 0)
        kill(child_pid, sig);
    errno = saved;
}

/* Is s a plain positive decimal number that fits in a pid_t? */
static int valid_pid(const char *s)
{
    long v = 0;

    if (*s == '\0')
        return 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return 0;
        v = v * 10 + (*s - '0');
        if (v > INT_MAX)
            return 0;
    }
    return v > 0;
}

int main(int argc, char **argv)
{
    const char *pid, *cwd;
    char **cmd;
    sigset_t fwd_set, old_set;
    struct sigaction sa;
    int status;
    size_t i;

    /* 1. arguments: PID CWD [--] ARGV0 [ARGS...] */
    if (argc < 4)
        die(EXIT_COCIN, "usage: nsenter_stub PID CWD [--] ARGV0 [ARGS...]");
    pid = argv[1];
    cwd = argv[2];
    cmd = argv + 3;
    if (strcmp(cmd[0], "--") == 0)
        cmd++;
    if (cmd[0] == NULL)
        die(EXIT_COCIN, "usage: nsenter_stub PID CWD [--] ARGV0 [ARGS...] (no command given)");
    if (!valid_pid(pid))
        die(EXIT_COCIN, "invalid PID \"%s\": not a positive number", pid);
    if (cwd[0] == '\0')
        die(EXIT_COCIN, "empty working directory");

    /* 2 + 3. join the target's namespaces and root directory */
    enter_namespaces(pid);

    /*
     * 4. fork.  Block the forwarded signals first: one arriving between
     * fork() and the moment we know the child's pid would otherwise be
     * lost.  Blocked signals stay pending and are forwarded as soon as
     * we unblock them below.
     */
    sigemptyset(&fwd_set);
    for (i = 0; i < N_FWD; i++)
        sigaddset(&fwd_set, forwarded[i]);
    sigprocmask(SIG_BLOCK, &fwd_set, &old_set);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    sigfillset(&sa.sa_mask);
    for (i = 0; i < N_FWD; i++)
        sigaction(forwarded[i], &sa, NULL);

    child_pid = fork();
    if (child_pid < 0)
        die(EXIT_COCIN, "fork: %s", strerror(errno));

    if (child_pid == 0) {
        /* child: restore the original mask (execve keeps the mask, and
         * resets our handlers to the default by itself) */
        sigprocmask(SIG_SETMASK, &old_set, NULL);
        if (chdir(cwd) < 0)
            die(EXIT_COCIN, "exec: cannot chdir to %s: %s", cwd, strerror(errno));
        run_command(cmd);           /* never returns */
    }

    /* parent: now deliver (forward) anything that arrived meanwhile */
    sigprocmask(SIG_SETMASK, &old_set, NULL);

    while (waitpid(child_pid, &status, 0) < 0) {
        if (errno != EINTR)
            die(EXIT_COCIN, "waitpid: %s", strerror(errno));
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return EXIT_COCIN;
}
