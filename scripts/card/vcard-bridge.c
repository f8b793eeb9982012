/*
 * vcard-bridge: presents a libcacard virtual CAC card (key and certificate in an
 * NSS database) to pcscd's vpcd reader driver, so that OpenSC sees a real
 * smart card without hardware. Test and demo tooling for ra-agent, not product code.
 *
 * Transport (vsmartcard's vpcd protocol): a TCP stream of messages, each a
 * 2-byte big-endian length and a payload. A 1-byte payload is a control
 * command (0x00 power off, 0x01 power on, 0x02 reset, 0x04 get ATR; only the
 * ATR is answered); anything longer is a command APDU, answered with the
 * response APDU in the same framing.
 *
 * vpcd (DEVICENAME /dev/null:0xPORT) listens on PORT and PORT+1 (its second
 * slot); the bridge connects to 127.0.0.1:PORT, retrying every 100 ms while
 * pcscd starts, and connects again when vpcd drops the connection. Stopping the
 * bridge is pulling the card out. (vpcd's "reverse" mode, where it connects to
 * the card, is not used: when a connect fails, vpcd 0.8 keeps the closed socket
 * number and pcscd aborts.)
 *
 * PIN retry counter: libcacard has none (a wrong PIN is just "condition not
 * satisfied"). The bridge intercepts VERIFY (INS 0x20) and keeps the counter in
 * a small state file, so it survives restarts. A failed VERIFY answers 63Cx
 * (x tries left; 63C0 for the failure that blocks the PIN, as PIV/CAC cards
 * do), every VERIFY after that 6983 (blocked, without asking NSS); a successful
 * one resets the counter. A VERIFY without data (PIN status query) answers 9000
 * when logged in, else 63Cx or 6983. OpenSC then reports CKR_PIN_INCORRECT,
 * CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED and CKR_PIN_LOCKED as for a real card.
 *
 * Every VERIFY with a PIN is logged on stderr as "pin: verified", "pin: wrong, N
 * tries left" or "pin: refused, blocked" (never the PIN), so tests can count logins.
 *
 * Usage: vcard-bridge --nssdb DIR --nickname NICK --pin-state FILE --port N
 *          [--max-tries N] [--reset-pin-counter] [--verbose]
 * SIGTERM or SIGINT: closes the connection (the reader sees the card removed)
 * and exits 0. PINs are never logged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <libcacard.h>

#define INS_VERIFY 0x20
#define MAX_MSG 65535

static volatile sig_atomic_t stop_requested;
static int verbose;

/* Options and the PIN counter state. */
static const char *pin_state_path;
static int max_tries = 3;
static int tries_left = 3;

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
    va_list ap;
    fputs("vcard-bridge: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* ---- PIN counter state file: {"maxTries":N,"triesLeft":N} ---------------- */

static int save_pin_state(void)
{
    char tmp[4096];
    char body[64];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", pin_state_path);
    if (n < 0 || (size_t)n >= sizeof tmp) return -1;
    n = snprintf(body, sizeof body, "{\"maxTries\":%d,\"triesLeft\":%d}\n", max_tries, tries_left);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -1;
    /* Write, flush to disk, then rename: a crash never leaves a half-written counter. */
    if (write(fd, body, (size_t)n) != n || fsync(fd) != 0) {
        close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    return rename(tmp, pin_state_path);
}

/* Returns 0 when the file was read, 1 when it does not exist, -1 when unreadable. */
static int load_pin_state(void)
{
    FILE *f = fopen(pin_state_path, "re");
    if (!f) return errno == ENOENT ? 1 : -1;
    int m = -1, t = -1;
    int ok = fscanf(f, " {\"maxTries\":%d,\"triesLeft\":%d}", &m, &t) == 2;
    fclose(f);
    if (!ok || m < 1 || m > 15 || t < 0 || t > m) return -1;
    max_tries = m;
    tries_left = t;
    return 0;
}

/* ---- framing ------------------------------------------------------------- */

/* vpcd sends length and payload in separate segments; with delayed ACKs each
 * APDU would wait ~40 ms for the peer's Nagle timer, so ACK at once. */
static void quickack(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
}

/* Reads exactly n bytes. Returns 1 on success, 0 on EOF/error, -1 when a stop was requested. */
static int read_full(int fd, unsigned char *buf, size_t n, const sigset_t *waitmask)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        quickack(fd);
        int r = ppoll(&p, 1, NULL, waitmask);
        if (r < 0) {
            if (errno == EINTR) {
                if (stop_requested) return -1;
                continue;
            }
            return 0;
        }
        ssize_t k = recv(fd, buf + got, n - got, 0);
        if (k == 0) return 0;
        if (k < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return 0;
        }
        got += (size_t)k;
    }
    return 1;
}

static int write_msg(int fd, const unsigned char *payload, size_t len)
{
    unsigned char buf[2 + MAX_MSG];
    if (len > MAX_MSG) return 0;
    buf[0] = (unsigned char)(len >> 8);
    buf[1] = (unsigned char)len;
    memcpy(buf + 2, payload, len);
    size_t off = 0;
    while (off < len + 2) {
        ssize_t k = send(fd, buf + off, len + 2 - off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR) continue;
            return 0;
        }
        off += (size_t)k;
    }
    return 1;
}

/* ---- APDU handling ------------------------------------------------------- */

static size_t status_only(unsigned char *out, unsigned char sw1, unsigned char sw2)
{
    out[0] = sw1;
    out[1] = sw2;
    return 2;
}

static size_t tries_status(unsigned char *out)
{
    if (tries_left <= 0) return status_only(out, 0x69, 0x83);
    return status_only(out, 0x63, (unsigned char)(0xC0 | tries_left));
}

/* True when the command APDU carries data (a PIN): short APDU case 3 or 4. */
static int apdu_has_data(const unsigned char *apdu, size_t len)
{
    return len > 5 && apdu[4] != 0;
}

/* Transmits to the card; returns the response length (at least 2). */
static size_t card_xfr(VReader *reader, unsigned char *apdu, size_t len, unsigned char *out, size_t out_size)
{
    int rlen = (int)out_size;
    VReaderStatus st = vreader_xfr_bytes(reader, apdu, (int)len, out, &rlen);
    if (st != VREADER_OK || rlen < 2) return status_only(out, 0x6F, 0x00);
    return (size_t)rlen;
}

static size_t handle_verify(VReader *reader, unsigned char *apdu, size_t len, unsigned char *out, size_t out_size)
{
    int with_pin = apdu_has_data(apdu, len);
    if (tries_left <= 0) {
        /* Blocked: a real card does not even look at the PIN. */
        if (with_pin) logf_("pin: refused, blocked");
        return status_only(out, 0x69, 0x83);
    }
    size_t rlen = card_xfr(reader, apdu, len, out, out_size);
    unsigned sw = ((unsigned)out[rlen - 2] << 8) | out[rlen - 1];
    if (!with_pin) {
        /* Status query: libcacard answers 9000 when logged in, 6A88 otherwise. */
        if (sw == 0x9000) return rlen;
        return tries_status(out);
    }
    if (sw == 0x9000) {
        if (tries_left != max_tries) {
            tries_left = max_tries;
            if (save_pin_state() != 0) logf_("cannot write %s: %s", pin_state_path, strerror(errno));
        }
        logf_("pin: verified");
        return rlen;
    }
    if (sw == 0x6985 || sw == 0x6982 || (sw & 0xFFF0) == 0x63C0) {
        /* Wrong PIN: spend one try, persisted before answering. */
        tries_left--;
        if (save_pin_state() != 0) logf_("cannot write %s: %s", pin_state_path, strerror(errno));
        logf_("pin: wrong, %d tries left", tries_left);
        /* Like PIV/CAC cards: the failure that blocks the PIN answers 63C0; 6983 comes after. */
        return status_only(out, 0x63, (unsigned char)(0xC0 | tries_left));
    }
    return rlen; /* wrong P1/P2 and the like: not a PIN failure */
}

static size_t handle_apdu(VReader *reader, unsigned char *apdu, size_t len, unsigned char *out, size_t out_size)
{
    if (len >= 4 && apdu[1] == INS_VERIFY) return handle_verify(reader, apdu, len, out, out_size);
    size_t rlen = card_xfr(reader, apdu, len, out, out_size);
    if (verbose) logf_("APDU ins=%02X len=%zu -> sw=%02X%02X len=%zu", apdu[1], len, out[rlen - 2], out[rlen - 1], rlen);
    return rlen;
}

/* Serves one vpcd connection until it closes. Returns -1 when a stop was requested. */
static int serve(int fd, VReader *reader, const unsigned char *atr, int atr_len, const sigset_t *waitmask)
{
    static unsigned char in[MAX_MSG], out[MAX_MSG];
    unsigned char hdr[2];
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (;;) {
        int r = read_full(fd, hdr, 2, waitmask);
        if (r <= 0) return r;
        size_t len = ((size_t)hdr[0] << 8) | hdr[1];
        if (len == 0) continue;
        r = read_full(fd, in, len, waitmask);
        if (r <= 0) return r;
        if (len == 1) {
            switch (in[0]) {
            case 0x00: /* power off: the card forgets its login state */
                vreader_power_off(reader);
                break;
            case 0x01: /* power on */
            case 0x02: { /* reset */
                unsigned char tmp[64];
                int tlen = sizeof tmp;
                vreader_power_on(reader, tmp, &tlen);
                break;
            }
            case 0x04: /* get ATR */
                if (!write_msg(fd, atr, (size_t)atr_len)) return 0;
                break;
            default:
                logf_("unknown control byte 0x%02X", in[0]);
            }
            continue;
        }
        size_t rlen = handle_apdu(reader, in, len, out, sizeof out);
        if (!write_msg(fd, out, rlen)) return 0;
    }
}

/* ---- connection to vpcd ------------------------------------------------ */

/* Connects to vpcd on 127.0.0.1:port, retrying every 100 ms (pcscd may still be
 * starting, or restarting). Returns the socket, or -1 when a stop was requested. */
static int connect_vpcd(int port, const sigset_t *waitmask)
{
    int warned = 0;
    while (!stop_requested) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0) return -1;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) return fd;
        if (verbose && !warned) logf_("waiting for vpcd on 127.0.0.1:%d (%s)", port, strerror(errno));
        warned = 1;
        close(fd);
        struct timespec delay = { .tv_sec = 0, .tv_nsec = 100 * 1000 * 1000 };
        (void)ppoll(NULL, 0, &delay, waitmask);
    }
    return -1;
}

/* ---- main ------------------------------------------------------------------ */

static VReader *find_card_reader(void)
{
    VReaderList *list = vreader_get_reader_list();
    VReader *found = NULL;
    if (!list) return NULL;
    for (VReaderListEntry *e = vreader_list_get_first(list); e; e = vreader_list_get_next(e)) {
        VReader *r = vreader_list_get_reader(e);
        if (!found && vreader_card_is_present(r) == VREADER_OK) {
            found = r;
        } else {
            vreader_free(r);
        }
    }
    vreader_list_delete(list);
    return found;
}

static int safe_option_text(const char *s)
{
    return strpbrk(s, "\",()=") == NULL && *s != '\0';
}

static void usage(void)
{
    fprintf(stderr,
            "usage: vcard-bridge --nssdb DIR --nickname NICK --pin-state FILE --port N\n"
            "                    [--max-tries N] [--reset-pin-counter] [--verbose]\n");
}

int main(int argc, char **argv)
{
    const char *nssdb = NULL, *nickname = NULL;
    int port = -1, reset_counter = 0;
    static const struct option opts[] = {
        { "nssdb", required_argument, NULL, 'd' },
        { "nickname", required_argument, NULL, 'n' },
        { "pin-state", required_argument, NULL, 's' },
        { "port", required_argument, NULL, 'p' },
        { "max-tries", required_argument, NULL, 'm' },
        { "reset-pin-counter", no_argument, NULL, 'r' },
        { "verbose", no_argument, NULL, 'v' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': nssdb = optarg; break;
        case 'n': nickname = optarg; break;
        case 's': pin_state_path = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'm': max_tries = atoi(optarg); break;
        case 'r': reset_counter = 1; break;
        case 'v': verbose = 1; break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    if (!nssdb || !nickname || !pin_state_path || port < 0 || optind != argc) {
        usage();
        return 2;
    }
    if (max_tries < 1 || max_tries > 15 || port < 1 || port > 65535) {
        logf_("--max-tries must be 1..15 and --port 1..65535");
        return 2;
    }
    if (!safe_option_text(nssdb) || !safe_option_text(nickname)) {
        logf_("--nssdb and --nickname must not contain \" , ( ) =");
        return 2;
    }

    /* PIN counter: keep what the file says unless told to reset it. */
    tries_left = max_tries;
    int loaded = reset_counter ? 1 : load_pin_state();
    if (loaded < 0) {
        logf_("cannot read PIN state %s (delete it or pass --reset-pin-counter)", pin_state_path);
        return 1;
    }
    if (loaded == 1 && save_pin_state() != 0) {
        logf_("cannot write PIN state %s: %s", pin_state_path, strerror(errno));
        return 1;
    }

    /* Signals are blocked except while waiting in ppoll, so a SIGTERM can never
     * slip in between checking the flag and starting to wait. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &waitmask);
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    char options[8192];
    int n = snprintf(options, sizeof options,
                     "db=\"sql:%s\" use_hw=no soft=(,vreader,CAC,,%s)", nssdb, nickname);
    if (n < 0 || (size_t)n >= sizeof options) {
        logf_("--nssdb or --nickname too long");
        return 2;
    }
    VCardEmulOptions *emul_opts = vcard_emul_options(options);
    if (!emul_opts || vcard_emul_init(emul_opts) != VCARD_EMUL_OK) {
        logf_("cannot load the NSS database %s", nssdb);
        return 1;
    }
    VReader *reader = find_card_reader();
    if (!reader) {
        logf_("no card: is there a certificate and key named \"%s\" in %s?", nickname, nssdb);
        return 1;
    }
    unsigned char atr[64];
    int atr_len = sizeof atr;
    if (vreader_power_on(reader, atr, &atr_len) != VREADER_OK || atr_len <= 0) {
        logf_("the virtual card gave no ATR");
        return 1;
    }

    if (verbose) logf_("card ready, %d of %d PIN tries left", tries_left, max_tries);

    /* One connection is one card insertion; when vpcd drops it, insert again. */
    while (!stop_requested) {
        int fd = connect_vpcd(port, &waitmask);
        if (fd < 0) break;
        if (verbose) logf_("inserted into vpcd on port %d", port);
        int tlen = sizeof atr;
        vreader_power_on(reader, atr, &tlen);
        int res = serve(fd, reader, atr, atr_len, &waitmask);
        close(fd);
        if (res < 0) break;
        if (verbose) logf_("vpcd closed the connection");
    }
    vreader_free(reader);
    if (verbose) logf_("stopped");
    return 0;
}
