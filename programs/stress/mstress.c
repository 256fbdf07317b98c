/* mstress: long-lived objects that move between threads while the working set grows and
 * shrinks. Each of `threads` threads keeps a set of live objects; in each of `phases`
 * phases it runs `steps` steps, each an allocation, a free or a realloc of a random
 * object (sizes from five classes, 8 bytes to 128 KiB). Even phases favour allocation (the
 * set grows towards `live` objects), odd ones favour frees (it shrinks). After each phase
 * every thread hands a quarter of its objects to the next thread, which keeps them for
 * later phases and eventually frees or reallocates them. A barrier orders the hand-over,
 * so the work of each thread is fixed by its seed.
 *
 * usage: mstress [threads=4] [phases=20] [steps=100000] [live=20000]
 * prints: the totals and a digest of every allocation's tag and size. */
#include "common.h"

static const char *program = "mstress";

struct object {
    void *memory;
    size_t size;
    uint64_t tag;
};

struct worker {
    long index;
    uint64_t random;
    uint64_t next_tag;
    struct object *live;
    long count;
    /* Objects handed to the next thread after a phase. */
    struct object *outbox;
    long outbox_count;
    uint64_t allocations, reallocations, frees, bytes, digest;
};

static long threads, phases, steps, live_limit;
static struct worker *workers;
static pthread_barrier_t barrier;

static size_t random_size(uint64_t *random)
{
    uint64_t class = random_below(random, 100);
    if (class < 70)
        return 8 + random_below(random, 57);
    if (class < 92)
        return 65 + random_below(random, 448);
    if (class < 99)
        return 513 + random_below(random, 3584);
    /* A few above 32 KiB, which many allocators map on their own. */
    if (random_below(random, 16) == 0)
        return 32769 + random_below(random, 98304);
    return 4097 + random_below(random, 28672);
}

static uint64_t new_tag(struct worker *w)
{
    return ((uint64_t)w->index << 40) | w->next_tag++;
}

static void allocate(struct worker *w)
{
    size_t size = random_size(&w->random);
    uint64_t tag = new_tag(w);
    void *memory = must_malloc(program, size);
    fill(memory, size, tag);
    w->live[w->count++] = (struct object){memory, size, tag};
    w->allocations++;
    w->bytes += size;
    w->digest += mix(tag, size);
}

static void release(struct worker *w, long i)
{
    struct object *o = &w->live[i];
    check(program, o->memory, o->size, o->tag);
    free(o->memory);
    w->frees++;
    w->live[i] = w->live[--w->count];
}

static void reallocate(struct worker *w, long i)
{
    struct object *o = &w->live[i];
    check(program, o->memory, o->size, o->tag);
    size_t size = random_size(&w->random);
    void *memory = realloc(o->memory, size);
    if (memory == NULL) {
        fprintf(stderr, "%s: realloc(%zu) returned NULL\n", program, size);
        exit(1);
    }
    /* realloc keeps the bytes up to the smaller of the two sizes. */
    check(program, memory, size < o->size ? size : o->size, o->tag);
    uint64_t tag = new_tag(w);
    fill(memory, size, tag);
    *o = (struct object){memory, size, tag};
    w->reallocations++;
    w->bytes += size;
    w->digest += mix(tag, size);
}

static void *work(void *argument)
{
    struct worker *w = argument;
    for (long phase = 0; phase < phases; phase++) {
        /* Percent of steps that allocate: growing phases allocate more than they free. */
        uint64_t allocate_percent = phase % 2 == 0 ? 60 : 30;
        for (long step = 0; step < steps; step++) {
            uint64_t choice = random_below(&w->random, 100);
            if (w->count == 0 || (choice < allocate_percent && w->count < live_limit))
                allocate(w);
            else if (choice >= 90)
                reallocate(w, (long)random_below(&w->random, (uint64_t)w->count));
            else
                release(w, (long)random_below(&w->random, (uint64_t)w->count));
        }
        long handed = w->count / 4;
        for (long i = 0; i < handed; i++)
            w->outbox[i] = w->live[--w->count];
        w->outbox_count = handed;
        pthread_barrier_wait(&barrier);
        struct worker *from = &workers[(w->index + threads - 1) % threads];
        for (long i = 0; i < from->outbox_count; i++)
            w->live[w->count++] = from->outbox[i];
        pthread_barrier_wait(&barrier);
    }
    while (w->count > 0)
        release(w, w->count - 1);
    return NULL;
}

int main(int argc, char **argv)
{
    threads = argument(argc, argv, 1, 4, "threads");
    phases = argument(argc, argv, 2, 20, "phases");
    steps = argument(argc, argv, 3, 100000, "steps");
    live_limit = argument(argc, argv, 4, 20000, "live");
    workers = calloc((size_t)threads, sizeof *workers);
    pthread_t *ids = calloc((size_t)threads, sizeof *ids);
    if (workers == NULL || ids == NULL)
        return 1;
    if (pthread_barrier_init(&barrier, NULL, (unsigned)threads) != 0)
        return 1;
    for (long i = 0; i < threads; i++) {
        workers[i].index = i;
        workers[i].random = 0x357e5500ULL + (uint64_t)i;
        /* Room for a full set plus a quarter of the previous thread's full set. */
        workers[i].live = calloc((size_t)(live_limit + live_limit / 4 + 1), sizeof(struct object));
        workers[i].outbox = calloc((size_t)(live_limit / 4 + 1), sizeof(struct object));
        if (workers[i].live == NULL || workers[i].outbox == NULL)
            return 1;
    }
    for (long i = 0; i < threads; i++)
        must_create(program, &ids[i], work, &workers[i]);
    uint64_t allocations = 0, reallocations = 0, frees = 0, bytes = 0, digest = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(ids[i], NULL);
        allocations += workers[i].allocations;
        reallocations += workers[i].reallocations;
        frees += workers[i].frees;
        bytes += workers[i].bytes;
        digest = mix(digest, workers[i].digest);
        free(workers[i].live);
        free(workers[i].outbox);
    }
    pthread_barrier_destroy(&barrier);
    free(workers);
    free(ids);
    printf("mstress threads=%ld phases=%ld steps=%ld live=%ld\n", threads, phases, steps,
           live_limit);
    printf("allocations %llu reallocations %llu frees %llu bytes %llu digest %016llx\n",
           (unsigned long long)allocations, (unsigned long long)reallocations,
           (unsigned long long)frees, (unsigned long long)bytes, (unsigned long long)digest);
    if (allocations != frees) {
        fprintf(stderr, "%s: %llu allocations but %llu frees\n", program,
                (unsigned long long)allocations, (unsigned long long)frees);
        return 1;
    }
    return 0;
}
