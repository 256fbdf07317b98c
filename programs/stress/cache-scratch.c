/* cache-scratch: passive false sharing. The main thread allocates one small object per
 * worker, one after another (so a simple allocator puts them on one cache line), and hands
 * each to a worker. Each worker frees the object it was given, then `iterations` times
 * allocates an object of the same size, writes every byte of it `writes` times, checks
 * it and frees it. An allocator that reuses the freed neighbouring memory for the workers'
 * objects puts threads on shared cache lines, and the writes slow down.
 *
 * usage: cache-scratch [threads=4] [iterations=5000] [writes=10000] [size=8]
 * prints: a digest of the bytes every worker wrote. */
#include "common.h"

static const char *program = "cache-scratch";

struct worker {
    long index;
    unsigned char *given;
    uint64_t given_tag;
    uint64_t digest;
};

static long iterations, writes;
static size_t size;

static void *work(void *argument)
{
    struct worker *w = argument;
    check(program, w->given, size, w->given_tag);
    free(w->given);
    unsigned char expected[256];
    uint64_t digest = 0;
    for (long i = 0; i < iterations; i++) {
        volatile unsigned char *object = must_malloc(program, size);
        for (size_t k = 0; k < size; k++) {
            expected[k] = (unsigned char)(w->index + (long)k + i);
            object[k] = expected[k];
        }
        for (long r = 0; r < writes; r++)
            for (size_t k = 0; k < size; k++)
                object[k] = (unsigned char)(object[k] * 31u + (unsigned)r);
        /* The same arithmetic on the private copy says what the object must hold. */
        for (long r = 0; r < writes; r++)
            for (size_t k = 0; k < size; k++)
                expected[k] = (unsigned char)(expected[k] * 31u + (unsigned)r);
        for (size_t k = 0; k < size; k++) {
            if (object[k] != expected[k]) {
                fprintf(stderr, "%s: corrupted object: worker %ld, iteration %ld, byte %zu\n",
                        program, w->index, i, k);
                exit(1);
            }
            digest = digest * 0x100000001b3ULL + expected[k];
        }
        free((void *)object);
    }
    w->digest = digest;
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argument(argc, argv, 1, 4, "threads");
    iterations = argument(argc, argv, 2, 5000, "iterations");
    writes = argument(argc, argv, 3, 10000, "writes");
    long object_size = argument(argc, argv, 4, 8, "size");
    if (object_size < MIN_OBJECT || object_size > 256) {
        fprintf(stderr, "%s: size must be %d..256\n", program, MIN_OBJECT);
        return 2;
    }
    size = (size_t)object_size;
    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    if (workers == NULL || ids == NULL)
        return 1;
    /* All the handed objects first, so that they are neighbours where the allocator packs. */
    for (long i = 0; i < threads; i++) {
        workers[i].index = i;
        workers[i].given_tag = 0xcac4e000ULL + (uint64_t)i;
        workers[i].given = must_malloc(program, size);
        fill(workers[i].given, size, workers[i].given_tag);
    }
    for (long i = 0; i < threads; i++)
        must_create(program, &ids[i], work, &workers[i]);
    uint64_t digest = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        digest = mix(digest, workers[i].digest);
    }
    free(workers);
    free(ids);
    printf("cache-scratch threads=%ld iterations=%ld writes=%ld size=%ld\n", threads, iterations,
           writes, object_size);
    printf("digest %016llx\n", (unsigned long long)digest);
    return 0;
}
