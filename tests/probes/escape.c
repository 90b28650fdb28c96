/* escape: probes of classic container escapes, for tests/e2e/test_security.py.
 *
 * Each subcommand *attempts* one step an attacker needs, on something harmless,
 * and says whether the kernel let it happen:
 *   exit 0, "allowed"           the step worked (the container is not confined)
 *   exit 1, "blocked: <error>"  the kernel refused it (what a confined container shows)
 *   exit 2                      usage error
 * None goes further than the first step: nothing is read, written or mounted
 * on the host.
 *
 *   shocker PATH     name_to_handle_at + open_by_handle_at on PATH (a file bind-mounted
 *                    from the host): the 2014 "shocker" escape opens any inode of the
 *                    host's file system this way (needs CAP_DAC_READ_SEARCH)
 *   keyctl           join a new session keyring (the kernel keyring is not namespaced)
 *   userns           unshare(CLONE_NEWUSER): a user namespace gives back every capability
 *   mount FSTYPE DIR mount a FSTYPE (tmpfs, sysfs, cgroup, proc) on DIR
 *   mknod PATH       make a block device node (loop0's numbers) at PATH
 *   io_uring         io_uring_setup(2): a ring runs reads, writes, opens... in the kernel,
 *                    past the seccomp filter (blocked by Docker's profile since 25.0)
 *
 * Built static (gcc -static) by the test session, bound into containers read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define KEYCTL_JOIN_SESSION_KEYRING 1

static int verdict(int rc, const char *what)
{
    if (rc < 0) {
        printf("blocked: %s: %s\n", what, strerror(errno));
        return 1;
    }
    printf("allowed: %s\n", what);
    return 0;
}

static int shocker(const char *path)
{
    struct file_handle *h = malloc(sizeof(*h) + MAX_HANDLE_SZ);
    int mount_id, mount_fd, fd;

    h->handle_bytes = MAX_HANDLE_SZ;
    if (name_to_handle_at(AT_FDCWD, path, h, &mount_id, 0) < 0)
        return verdict(-1, "name_to_handle_at");
    mount_fd = open(path, O_RDONLY);
    if (mount_fd < 0)
        return verdict(-1, "open");
    fd = open_by_handle_at(mount_fd, h, O_RDONLY);
    if (fd >= 0)
        close(fd);
    return verdict(fd, "open_by_handle_at");
}

int main(int argc, char **argv)
{
    const char *cmd = argc > 1 ? argv[1] : "";

    if (!strcmp(cmd, "shocker") && argc == 3)
        return shocker(argv[2]);
    if (!strcmp(cmd, "keyctl") && argc == 2)
        return verdict(syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0L, 0L, 0L, 0L), "keyctl");
    if (!strcmp(cmd, "userns") && argc == 2)
        return verdict(unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)");
    if (!strcmp(cmd, "mount") && argc == 4)
        return verdict(mount("none", argv[3], argv[2], 0, NULL), "mount");
    if (!strcmp(cmd, "io_uring") && argc == 2) {
        long params[15] = {0};      /* struct io_uring_params: 120 bytes, zeroed */
        long fd = syscall(425 /* __NR_io_uring_setup, x86_64 and aarch64 */, 1L, params);

        if (fd >= 0)
            close((int)fd);
        return verdict((int)fd, "io_uring_setup");
    }
    if (!strcmp(cmd, "mknod") && argc == 3)
        return verdict(mknod(argv[2], S_IFBLK | 0600, makedev(7, 0)), "mknod");
    fprintf(stderr, "usage: escape shocker PATH | keyctl | userns | mount FSTYPE DIR | mknod PATH | io_uring\n");
    return 2;
}
