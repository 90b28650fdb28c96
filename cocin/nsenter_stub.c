/*
 * nsenter_stub.c - the tiny helper behind `cocin exec`.
 *
 * Usage:
 *     nsenter_stub [OPTIONS] PID CWD [--] ARGV0 [ARGS...]
 *
 * It runs ARGV0 (with ARGS) inside the namespaces of the running process
 * PID -- normally the container's init -- much like `docker exec`, and
 * confines it the way the container itself is confined.  OPTIONS (each one
 * optional; without them the command keeps the caller's identity and
 * privileges):
 *     --start-time T   PID must still be the process that started at T
 *                      (field 22 of /proc/PID/stat): a reused PID is refused
 *     --uid U --gid G  the user and group to run as
 *     --groups G1,G2   the supplementary groups ("" for none)
 *     --caps HEXMASK   the capabilities to keep (as CapEff prints them)
 *     --nnp            set no_new_privs: execve never grants privileges
 *     --seccomp FILE   install this seccomp filter (a raw struct sock_filter
 *                      array, as cocin compiles it; a path on the host)
 *     --env K=V        (repeated) the command's environment, instead of ours
 *
 * Why C and not Python?  setns(CLONE_NEWPID) only affects *children*
 * created afterwards, and setns(CLONE_NEWNS) refuses to work in a
 * multi-threaded process.  A small, single-threaded, statically linked
 * program is the simplest reliable way to do it, and being static it does
 * not care which libc (if any) lives inside the container.
 *
 * What it does, step by step:
 *   1. Validate arguments, read the seccomp filter (a host file: once we
 *      are in the container's mount namespace it is out of sight).  Usage
 *      errors -> one line on stderr, exit 125.
 *   2. Open /proc/PID/ns/{ipc,uts,net,pid,cgroup,mnt} and /proc/PID/root
 *      -- ALL fds first, because once we join the mount namespace the
 *      /proc we see is the container's and "PID" would mean nothing.
 *      A namespace we already share with PID is skipped (setns into your
 *      own namespace can fail; util-linux nsenter skips them the same way).
 *      Then check PID's start time through the same /proc/PID directory
 *      fd: the fds are the container's, not those of a process that got
 *      its PID number after it died.
 *   3. setns() into each one, the mount namespace last, then chroot into
 *      the target's root directory (/proc/PID/root, opened in step 2) so a
 *      chroot()ed container works as well as a pivot_root()ed one.
 *   4. fork(): only the child really lives in the PID namespace.
 *      Child : setsid() (never the caller's terminal as controlling
 *              terminal), chdir(CWD), confine itself (step 5), look ARGV0
 *              up in $PATH, execve().
 *      Parent: forward signals to the child, wait, exit with its status.
 *   5. The confinement, in runc's order (finalizeNamespace):
 *        no_new_privs; the seccomp filter now if no_new_privs is off
 *        (installing one then needs CAP_SYS_ADMIN, which we still hold);
 *        drop from the bounding set every capability not kept;
 *        PR_SET_KEEPCAPS (so that the uid change keeps the permitted set);
 *        setgroups, setgid, setuid; capset (root: effective = permitted =
 *        the mask; any other user: nothing, the mask stays in its bounding
 *        set only); clear the ambient set; the seccomp filter last if
 *        no_new_privs is on (as late as possible: fewer calls to allow).
 *
 * Things the stub deliberately does NOT do:
 *   - environment: the --env entries (or, without any, our own environ)
 *     are passed to execve unchanged (the Python caller builds the
 *     container environment and hands it to us as --env: the container
 *     controls it, and our own environment is read by the C library at
 *     start-up, GLIBC_TUNABLES for one, while we are still root on the host);
 *   - users by name: the caller looks the user up in the container's
 *     /etc/passwd and /etc/group and passes numbers;
 *   - cgroups: the caller joins the container's cgroup before exec'ing
 *     us, and cgroup membership is inherited by our child;
 *   - terminals: fds 0,1,2 are simply inherited (the caller sets up a pty
 *     for `exec -t` if it wants one);
 *   - shells: the command is an argv vector, never a shell string.
 *
 * Exit codes (the same convention as `docker exec` / `docker run`):
 *   125  cocin's own failure (bad usage, no such PID, setns/chdir failed,
 *        the confinement could not be applied)
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
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXIT_COCIN     125  /* our own failure            */
#define EXIT_CANNOT    126  /* found but not executable   */
#define EXIT_NOTFOUND  127  /* command not found          */

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define USAGE "usage: nsenter_stub [--start-time T] [--uid U --gid G --groups G1,G2 " \
              "--caps HEXMASK --nnp --seccomp FILE] [--env K=V ...] PID CWD [--] ARGV0 [ARGS...]"

/* What the options ask for (step 1 fills it, steps 2 and 5 apply it). */
static struct options {
    unsigned long long start_time;  /* --start-time, 0: not checked        */
    int set_uid, set_gid, set_groups, set_caps, nnp;
    uid_t uid;
    gid_t gid;
    gid_t *groups;                  /* --groups, parsed                    */
    size_t n_groups;
    uint64_t caps;                  /* --caps: bit N = capability N        */
    struct sock_fprog filter;       /* --seccomp, read; len 0: none        */
    char **env;                     /* --env entries, NULL-terminated      */
    size_t n_env;
} opt;

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

/* The command's environment: the --env entries if any were given, else ours. */
static char **command_env(void)
{
    return opt.env != NULL ? opt.env : environ;
}

/* getenv() in the command's environment. */
static const char *command_getenv(const char *name)
{
    size_t len = strlen(name);
    char **e;

    for (e = command_env(); *e != NULL; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

/* One more --env entry (argv strings live as long as we do). */
static void add_env(char *entry)
{
    char **grown;

    if (strchr(entry, '=') == NULL)
        die(EXIT_COCIN, "invalid --env \"%s\": not NAME=VALUE", entry);
    grown = realloc(opt.env, (opt.n_env + 2) * sizeof(char *));
    if (grown == NULL)
        die(EXIT_COCIN, "out of memory");
    opt.env = grown;
    opt.env[opt.n_env++] = entry;
    opt.env[opt.n_env] = NULL;
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

/*
 * The start time of the process behind procfd (an fd on /proc/PID): field 22
 * of its "stat", counted after the last ')' since the command name (field 2)
 * may itself contain spaces and parentheses.  0 for a zombie or an error.
 */
static unsigned long long start_time(int procfd)
{
    char buf[1024], *p;
    unsigned long long value = 0;
    ssize_t n;
    int fd, field;

    fd = openat(procfd, "stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
        return 0;
    /* p + 2 is field 3 (the state); skip to field 22 */
    for (p += 2, field = 3; field < 22 && p != NULL; field++) {
        p = strchr(p, ' ');
        if (p != NULL)
            p++;
    }
    if (p != NULL)
        value = strtoull(p, NULL, 10);
    return value;
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

    /*
     * Is PID still the container's process?  procfd stays bound to the
     * process it was opened for (if that one dies, openat() through it
     * fails), so a matching start time read through it now proves that
     * the fds above are the container's, not a newcomer's with its PID.
     */
    if (opt.start_time != 0 && start_time(procfd) != opt.start_time)
        die(EXIT_COCIN, "process %s has exited: it is not the container's any more", pid);
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
/* Step 1: options                                                      */
/* ------------------------------------------------------------------ */

/* A decimal number below `limit`, or die naming the option. */
static unsigned long long number(const char *name, const char *s, unsigned long long limit)
{
    unsigned long long v = 0, digit;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        digit = (unsigned long long)(*p - '0');
        if (v > (limit - 1 - digit) / 10)
            break;              /* v * 10 + digit would reach limit */
        v = v * 10 + digit;
    }
    if (*s == '\0' || *p != '\0')
        die(EXIT_COCIN, "invalid %s \"%s\": not a number below %llu", name, s, limit);
    return v;
}

/* "5,27,100" -> opt.groups; "" -> no supplementary groups. */
static void parse_groups(const char *s)
{
    char item[16];
    const char *p = s;
    size_t n = 1, len;

    for (; *p; p++)
        n += (*p == ',');
    if (*s == '\0')
        n = 0;
    if (n > 65536)          /* NGROUPS_MAX */
        die(EXIT_COCIN, "invalid --groups: more than 65536 groups");
    opt.groups = calloc(n ? n : 1, sizeof(gid_t));
    if (opt.groups == NULL)
        die(EXIT_COCIN, "out of memory");
    for (p = s; opt.n_groups < n; p += len + 1) {
        len = strcspn(p, ",");
        if (len >= sizeof(item))
            die(EXIT_COCIN, "invalid --groups \"%s\"", s);
        memcpy(item, p, len);
        item[len] = '\0';
        opt.groups[opt.n_groups++] = (gid_t)number("group", item, UINT32_MAX);
    }
}

/* "a80425fb" (or "0xa80425fb") -> opt.caps */
static void parse_caps(const char *s)
{
    char *end;

    errno = 0;
    opt.caps = strtoull(s, &end, 16);
    if (*s == '\0' || *s == '-' || *end != '\0' || errno != 0)
        die(EXIT_COCIN, "invalid --caps \"%s\": not a hexadecimal mask", s);
}

/*
 * Read the seccomp filter FILE now, while "/" is still the host's: a raw
 * array of struct sock_filter (8 bytes each).  O_NOFOLLOW: the file is
 * cocin's own, never a symlink.
 */
static void read_filter(const char *path)
{
    struct stat st;
    size_t size, done = 0;
    ssize_t n;
    char *buf;
    int fd;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0)
        die(EXIT_COCIN, "cannot open seccomp filter %s: %s", path, strerror(errno));
    size = (size_t)st.st_size;
    if (!S_ISREG(st.st_mode) || size == 0 || size % sizeof(struct sock_filter) != 0 ||
        size > BPF_MAXINSNS * sizeof(struct sock_filter))
        die(EXIT_COCIN, "invalid seccomp filter %s: not an array of at most %d BPF instructions",
            path, BPF_MAXINSNS);
    buf = malloc(size);
    if (buf == NULL)
        die(EXIT_COCIN, "out of memory");
    while (done < size) {
        n = read(fd, buf + done, size - done);
        if (n <= 0)
            die(EXIT_COCIN, "cannot read seccomp filter %s: %s", path, n ? strerror(errno) : "short file");
        done += (size_t)n;
    }
    close(fd);
    opt.filter.len = (unsigned short)(size / sizeof(struct sock_filter));
    opt.filter.filter = (struct sock_filter *)buf;
}

/*
 * Parse the OPTIONS (everything before PID starting with "--" that is not
 * "--" itself); returns the index of PID in argv.
 */
static int parse_options(int argc, char **argv)
{
    const char *value;
    int i = 1;

    for (; i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0'; i++) {
        const char *name = argv[i];

        if (strcmp(name, "--nnp") == 0) {
            opt.nnp = 1;
            continue;
        }
        if (i + 1 >= argc)
            die(EXIT_COCIN, "option %s needs a value; " USAGE, name);
        value = argv[++i];
        if (strcmp(name, "--start-time") == 0) {
            opt.start_time = number("start time", value, ULLONG_MAX);
        } else if (strcmp(name, "--uid") == 0) {
            opt.uid = (uid_t)number("uid", value, UINT32_MAX);
            opt.set_uid = 1;
        } else if (strcmp(name, "--gid") == 0) {
            opt.gid = (gid_t)number("gid", value, UINT32_MAX);
            opt.set_gid = 1;
        } else if (strcmp(name, "--groups") == 0) {
            parse_groups(value);
            opt.set_groups = 1;
        } else if (strcmp(name, "--caps") == 0) {
            parse_caps(value);
            opt.set_caps = 1;
        } else if (strcmp(name, "--seccomp") == 0) {
            read_filter(value);
        } else if (strcmp(name, "--env") == 0) {
            add_env(argv[i]);
        } else {
            die(EXIT_COCIN, "unknown option %s; " USAGE, name);
        }
    }
    return i;
}

/* ------------------------------------------------------------------ */
/* Step 5, child side: confine ourselves as the container is            */
/* ------------------------------------------------------------------ */

static void install_filter(void)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &opt.filter) < 0)
        die(EXIT_COCIN, "cannot install the seccomp filter: %s", strerror(errno));
}

/* Keep only the capabilities of opt.caps in the bounding set. */
static void drop_bounding_set(void)
{
    int cap;

    /* PR_CAPBSET_READ fails (EINVAL) past the kernel's last capability */
    for (cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++) {
        if (cap < 64 && (opt.caps >> cap) & 1)
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            die(EXIT_COCIN, "cannot drop capability %d from the bounding set: %s", cap, strerror(errno));
    }
}

/* effective = permitted = mask for root, nothing for any other user. */
static void set_capabilities(void)
{
    struct __user_cap_header_struct head = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct data[2];
    uint64_t keep = 0, permitted;
    int i;

    if (syscall(SYS_capget, &head, data) < 0)
        die(EXIT_COCIN, "capget: %s", strerror(errno));
    permitted = data[0].permitted | (uint64_t)data[1].permitted << 32;
    if (geteuid() == 0)
        keep = opt.caps & permitted;    /* what we do not hold cannot be given */
    for (i = 0; i < 2; i++) {
        data[i].effective = data[i].permitted = (uint32_t)(keep >> (32 * i));
        data[i].inheritable = 0;
    }
    if (syscall(SYS_capset, &head, data) < 0)
        die(EXIT_COCIN, "capset: %s", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        die(EXIT_COCIN, "cannot clear the ambient capabilities: %s", strerror(errno));
}

static void confine(void)
{
    if (opt.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        die(EXIT_COCIN, "cannot set no_new_privs: %s", strerror(errno));
    if (opt.filter.len && !opt.nnp)
        install_filter();               /* still holding CAP_SYS_ADMIN */
    if (opt.set_caps) {
        drop_bounding_set();
        if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
            die(EXIT_COCIN, "PR_SET_KEEPCAPS: %s", strerror(errno));
    }
    if (opt.set_groups && setgroups(opt.n_groups, opt.groups) < 0)
        die(EXIT_COCIN, "setgroups: %s", strerror(errno));
    if (opt.set_gid && setgid(opt.gid) < 0)
        die(EXIT_COCIN, "setgid %u: %s", (unsigned)opt.gid, strerror(errno));
    if (opt.set_uid && setuid(opt.uid) < 0)
        die(EXIT_COCIN, "setuid %u: %s", (unsigned)opt.uid, strerror(errno));
    if (opt.set_caps)
        set_capabilities();
    if (opt.filter.len && opt.nnp)
        install_filter();               /* last: fewer calls need allowing */
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
        execve(name, argv, command_env());
        exec_failed(name, errno);
    }

    path = command_getenv("PATH");
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
            execve(full, argv, command_env());
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
    int status, first;
    size_t i;

    /*
     * Not dumpable until execve (which resets it): no process of the
     * container may ptrace us or open our /proc files while we still hold
     * the host's privileges and fds.
     */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);

    /* 1. arguments: [OPTIONS] PID CWD [--] ARGV0 [ARGS...] */
    first = parse_options(argc, argv);
    if (argc - first < 3)
        die(EXIT_COCIN, USAGE);
    pid = argv[first];
    cwd = argv[first + 1];
    cmd = argv + first + 2;
    if (strcmp(cmd[0], "--") == 0)
        cmd++;
    if (cmd[0] == NULL)
        die(EXIT_COCIN, USAGE " (no command given)");
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
        /* a session of its own: the caller's terminal must not become the
         * command's controlling terminal (TIOCSTI would type into the host's shell) */
        if (setsid() < 0)
            die(EXIT_COCIN, "setsid: %s", strerror(errno));
        if (chdir(cwd) < 0)
            die(EXIT_COCIN, "exec: cannot chdir to %s: %s", cwd, strerror(errno));
        confine();
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
