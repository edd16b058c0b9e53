/*
 * The test guest's traffic program: known traffic on eth0, counted.
 *
 *   qns-guest send IFACE COUNT SIZE[,SIZE...]
 *       send COUNT Ethernet/IPv4/UDP frames of the given sizes (cycled;
 *       each from 46 to 1514 bytes, the Ethernet header included) from
 *       10.0.0.2:5001 to 10.0.0.1:5000, MAC 52:54:00:00:00:01, through a
 *       packet socket: no IP address, ARP or route is needed. A frame the
 *       queue refuses (ENOBUFS) is sent again, so all COUNT leave.
 *   qns-guest recv IFACE COUNT IDLE_MS
 *       count the UDP frames to port 5000 that arrive, until COUNT have
 *       or none came for IDLE_MS.
 *   qns-guest serve PORT BYTES
 *       a TCP server: for each connection, write BYTES of a fixed pattern,
 *       then close (the same bytes in every guest, for colo-compare).
 *   qns-guest seq PORT IDLE_MS
 *       receive numbered UDP datagrams on PORT (a 32-bit big-endian
 *       sequence number first) until none came for IDLE_MS after the first
 *       (printing "seq-ready" once bound), then print "seq received R
 *       unique U dup D reordered O first F last L missing M": reordered
 *       counts the new numbers that came after a higher one, missing the
 *       numbers between first and last that never came.
 *   qns-guest echo tcp|udp PORT
 *       an echo server: each TCP connection gets back every byte it sends
 *       until it shuts down its side, then is closed; each UDP datagram is
 *       sent back to where it came from.
 *
 * send and recv print "frames N bytes B" (B counts whole Ethernet frames,
 * as /sys/class/net/IFACE/statistics does); every error exits nonzero.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HDRS (14 + 20 + 8)
#define MAX_FRAME 1514
#define SRC_PORT 5001
#define DST_PORT 5000

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int packet_socket(const char *ifname, struct sockaddr_ll *sll,
                         unsigned char mac[6])
{
    int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_IP));
    struct ifreq ifr;

    if (fd < 0) {
        die("socket");
    }
    memset(&ifr, 0, sizeof(ifr));
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
    if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
        die("SIOCGIFHWADDR");
    }
    memcpy(mac, ifr.ifr_hwaddr.sa_data, 6);
    memset(sll, 0, sizeof(*sll));
    sll->sll_family = AF_PACKET;
    sll->sll_protocol = htons(ETH_P_IP);
    sll->sll_ifindex = if_nametoindex(ifname);
    if (!sll->sll_ifindex) {
        die("if_nametoindex");
    }
    if (bind(fd, (struct sockaddr *)sll, sizeof(*sll)) < 0) {
        die("bind");
    }
    return fd;
}

static uint16_t ip_checksum(const void *data, size_t len)
{
    const uint16_t *p = data;
    uint32_t sum = 0;

    for (; len > 1; len -= 2) {
        sum += *p++;
    }
    while (sum >> 16) {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    return ~sum;
}

static size_t build_frame(unsigned char *f, size_t size,
                          const unsigned char src_mac[6], uint32_t seq)
{
    static const unsigned char dst_mac[6] = { 0x52, 0x54, 0, 0, 0, 1 };
    struct iphdr *ip = (struct iphdr *)(f + 14);
    struct udphdr *udp = (struct udphdr *)(f + 14 + 20);
    size_t i;

    memcpy(f, dst_mac, 6);
    memcpy(f + 6, src_mac, 6);
    f[12] = 0x08;
    f[13] = 0x00;
    memset(ip, 0, sizeof(*ip));
    ip->version = 4;
    ip->ihl = 5;
    ip->tot_len = htons(size - 14);
    ip->id = htons(seq & 0xffff);
    ip->ttl = 64;
    ip->protocol = IPPROTO_UDP;
    ip->saddr = htonl(0x0a000002);
    ip->daddr = htonl(0x0a000001);
    ip->check = ip_checksum(ip, 20);
    udp->source = htons(SRC_PORT);
    udp->dest = htons(DST_PORT);
    udp->len = htons(size - 14 - 20);
    udp->check = 0;
    for (i = HDRS; i < size; i++) {
        f[i] = (unsigned char)(seq + i);
    }
    return size;
}

static int cmd_send(const char *ifname, long count, char *sizes)
{
    size_t list[64], n = 0;
    unsigned char frame[MAX_FRAME], mac[6];
    struct sockaddr_ll sll;
    unsigned long long bytes = 0;
    char *tok;
    long i;
    int fd;

    for (tok = strtok(sizes, ","); tok && n < 64; tok = strtok(NULL, ",")) {
        long s = strtol(tok, NULL, 10);
        if (s < HDRS + 4 || s > MAX_FRAME) {
            fprintf(stderr, "size %ld out of range\n", s);
            return 2;
        }
        list[n++] = s;
    }
    if (!n) {
        return 2;
    }
    fd = packet_socket(ifname, &sll, mac);
    for (i = 0; i < count; i++) {
        size_t len = build_frame(frame, list[i % n], mac, i);
        for (;;) {
            ssize_t r = sendto(fd, frame, len, 0, (struct sockaddr *)&sll,
                               sizeof(sll));
            if (r == (ssize_t)len) {
                break;
            }
            if (r < 0 && (errno == ENOBUFS || errno == EAGAIN ||
                          errno == EINTR)) {
                usleep(1000);
                continue;
            }
            die("sendto");
        }
        bytes += len;
    }
    printf("frames %ld bytes %llu\n", count, bytes);
    return 0;
}

static int cmd_recv(const char *ifname, long count, int idle_ms)
{
    unsigned char frame[MAX_FRAME + 64], mac[6];
    struct sockaddr_ll sll;
    unsigned long long bytes = 0;
    long got = 0;
    int fd = packet_socket(ifname, &sll, mac);
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int rcvbuf = 64 << 20;

    /* Room for every frame of a burst: the count is the test's check. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf,
                   sizeof(rcvbuf)) < 0) {
        die("SO_RCVBUFFORCE");
    }

    /* Say we listen only once the socket is bound: frames sent after this
     * line are all seen. */
    printf("listening\n");
    fflush(stdout);
    while (got < count) {
        struct udphdr *udp = (struct udphdr *)(frame + 14 + 20);
        ssize_t r;
        int p = poll(&pfd, 1, idle_ms);

        if (p < 0 && errno == EINTR) {
            continue;
        }
        if (p <= 0) {
            break;
        }
        r = recv(fd, frame, sizeof(frame), 0);
        if (r < 0) {
            die("recv");
        }
        if (r >= HDRS && frame[14 + 9] == IPPROTO_UDP &&
            ntohs(udp->dest) == DST_PORT) {
            got++;
            bytes += r;
        }
    }
    printf("frames %ld bytes %llu\n", got, bytes);
    return 0;
}

static int listener(int type, int port)
{
    struct sockaddr_in addr = { .sin_family = AF_INET,
                                .sin_port = htons(port) };
    int one = 1, fd = socket(AF_INET, type, 0);

    if (fd < 0) {
        die("socket");
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        (type == SOCK_STREAM && listen(fd, 4) < 0)) {
        die("bind/listen");
    }
    return fd;
}

static void __attribute__((noreturn)) cmd_serve(int port, long total)
{
    char buf[4096];
    int lfd = listener(SOCK_STREAM, port);
    long i;

    for (i = 0; i < (long)sizeof(buf); i++) {
        buf[i] = 'a' + i % 26;
    }
    for (;;) {
        long left = total;
        int fd = accept(lfd, NULL, NULL);

        if (fd < 0) {
            continue;
        }
        while (left > 0) {
            ssize_t w = write(fd, buf, left < (long)sizeof(buf) ?
                              (size_t)left : sizeof(buf));
            if (w <= 0) {
                break;
            }
            left -= w;
        }
        close(fd);
    }
}

static void __attribute__((noreturn)) cmd_echo(const char *proto, int port)
{
    char buf[65536];
    int udp = !strcmp(proto, "udp");
    int lfd = listener(udp ? SOCK_DGRAM : SOCK_STREAM, port);

    for (;;) {
        struct sockaddr_in peer;
        socklen_t plen = sizeof(peer);
        ssize_t r;
        int fd;

        if (udp) {
            r = recvfrom(lfd, buf, sizeof(buf), 0, (struct sockaddr *)&peer,
                         &plen);
            if (r >= 0) {
                sendto(lfd, buf, r, 0, (struct sockaddr *)&peer, plen);
            }
            continue;
        }
        fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            continue;
        }
        while ((r = read(fd, buf, sizeof(buf))) > 0) {
            char *p = buf;

            while (r > 0) {
                ssize_t w = write(fd, p, r);

                if (w <= 0) {
                    break;
                }
                p += w;
                r -= w;
            }
        }
        close(fd);
    }
}

static int cmd_seq(int port, int idle_ms)
{
    static uint8_t seen[1 << 21];   /* a bit per number below 2^24 */
    int fd = listener(SOCK_DGRAM, port), big = 8 << 20;
    long received = 0, unique = 0, dup = 0, reordered = 0;
    long first = -1, last = -1;
    uint8_t buf[2048];

    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    printf("seq-ready\n");
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t r;
        uint32_t n;

        if (poll(&p, 1, received ? idle_ms : -1) <= 0) {
            break;
        }
        r = recv(fd, buf, sizeof(buf), 0);
        if (r < 4) {
            continue;
        }
        n = ((uint32_t)buf[0] << 24 | buf[1] << 16 | buf[2] << 8 | buf[3]) &
            ((1u << 24) - 1);
        received++;
        if (seen[n / 8] & (1 << n % 8)) {
            dup++;
            continue;
        }
        seen[n / 8] |= 1 << n % 8;
        unique++;
        if (first < 0 || n < first) {
            first = n;
        }
        if ((long)n < last) {
            reordered++;
        } else {
            last = n;
        }
    }
    printf("seq received %ld unique %ld dup %ld reordered %ld first %ld "
           "last %ld missing %ld\n", received, unique, dup, reordered, first,
           last, last < 0 ? 0 : last - first + 1 - unique);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 5 && !strcmp(argv[1], "send")) {
        return cmd_send(argv[2], atol(argv[3]), argv[4]);
    }
    if (argc == 5 && !strcmp(argv[1], "recv")) {
        return cmd_recv(argv[2], atol(argv[3]), atoi(argv[4]));
    }
    if (argc == 4 && !strcmp(argv[1], "serve")) {
        cmd_serve(atoi(argv[2]), atol(argv[3]));
    }
    if (argc == 4 && !strcmp(argv[1], "seq")) {
        return cmd_seq(atoi(argv[2]), atoi(argv[3]));
    }
    if (argc == 4 && !strcmp(argv[1], "echo")) {
        cmd_echo(argv[2], atoi(argv[3]));
    }
    fprintf(stderr, "usage: qns-guest send IFACE COUNT SIZES | "
            "recv IFACE COUNT IDLE_MS | serve PORT BYTES | "
            "seq PORT IDLE_MS | echo tcp|udp PORT\n");
    return 2;
}
