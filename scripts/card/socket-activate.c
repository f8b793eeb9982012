/*
 * socket-activate: runs a program with a listening Unix socket passed the way
 * systemd does it (fd 3, LISTEN_FDS=1, LISTEN_PID=<its pid>). Test tooling for
 * ra-agent's virtual smart card.
 *
 * Why: pcscd 1.9 has its client socket path compiled in (/run/pcscd/pcscd.comm),
 * so only one pcscd could run per machine. A socket-activated pcscd serves the
 * socket it is given instead, and clients (libpcsclite) find it through
 * PCSCLITE_CSOCK_NAME, so each virtual card gets a private pcscd that neither
 * disturbs nor sees the system's. (systemd-socket-activate does the same, but
 * is not installed everywhere.)
 *
 * Usage: socket-activate SOCKET_PATH PROGRAM [ARGS...]
 * A stale file at SOCKET_PATH is replaced; the socket is made mode 0600.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define SD_LISTEN_FDS_START 3

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: socket-activate SOCKET_PATH PROGRAM [ARGS...]\n");
        return 2;
    }
    const char *path = argv[1];
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof a.sun_path) {
        fprintf(stderr, "socket-activate: socket path longer than %zu bytes: %s\n", sizeof a.sun_path - 1, path);
        return 2;
    }
    strcpy(a.sun_path, path);

    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("socket-activate: socket");
        return 1;
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        fprintf(stderr, "socket-activate: cannot remove %s: %s\n", path, strerror(errno));
        return 1;
    }
    /* Only the owner may talk to this pcscd (its card holds a known PIN). */
    mode_t old = umask(0077);
    int r = bind(fd, (struct sockaddr *)&a, sizeof a);
    umask(old);
    if (r != 0 || listen(fd, SOMAXCONN) != 0) {
        fprintf(stderr, "socket-activate: cannot listen on %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (fd != SD_LISTEN_FDS_START) {
        if (dup2(fd, SD_LISTEN_FDS_START) < 0) {
            perror("socket-activate: dup2");
            return 1;
        }
        close(fd);
    }
    char pid[32];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    if (setenv("LISTEN_FDS", "1", 1) != 0 || setenv("LISTEN_PID", pid, 1) != 0) {
        perror("socket-activate: setenv");
        return 1;
    }
    unsetenv("LISTEN_FDNAMES");
    execvp(argv[2], argv + 2);
    fprintf(stderr, "socket-activate: cannot run %s: %s\n", argv[2], strerror(errno));
    return 127;
}
