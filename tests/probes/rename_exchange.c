/* rename_exchange: exchange two names in a loop, atomically, as fast as possible.
 *
 * Used by tests/e2e/test_security_files.py inside a container: it swaps a
 * directory and a symlink pointing to a host directory, so that host code
 * walking the container's files by path sees one and then acts on the other.
 * renameat2(RENAME_EXCHANGE) swaps both names in one step: at every instant
 * each name exists, once as the directory, once as the symlink.
 *
 * It runs at the lowest priority (nice 19), not to starve the machine.
 *
 * Usage: rename_exchange A B   (runs until killed; exit 1 if the swap fails)
 * Built static by the test: gcc -static -O2 -o rename_exchange rename_exchange.c
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s A B\n", argv[0]);
		return 2;
	}
	if (nice(19) == -1)
		perror("nice");
	for (;;) {
		if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
			perror("renameat2");
			return 1;
		}
	}
}
