/* larson: a server-like load. Each of `threads` lineages owns an array of `slots` objects;
 * each step frees a random slot's object and allocates one of a random size in its place.
 * After `steps` steps the lineage's thread starts a new thread, hands it the array and
 * exits, so the new thread frees objects that another thread allocated ("bleeding"), and
 * every lineage goes through `rounds` threads. The initial objects come from the main
 * thread, so the first frees cross threads too.
 *
 * usage: larson [threads=4] [rounds=8] [steps=400000] [slots=1000] [min=16] [max=512]
 * prints: the work's totals and a digest of every object's tag and size. */
#include "common.h"

static const char *program = "larson";

struct lineage {
    long index;
    uint64_t random;
    long slots;
    void **object;
    size_t *size;
    uint64_t *tag;
    uint64_t next_tag;
    long rounds_left;
    long steps;
    size_t min, max;
    /* The thread that ran the previous round; the next one joins it. */
    pthread_t previous;
    int has_previous;
    /* Totals of the lineage's work, read by main after `finished`. */
    uint64_t allocations, bytes, digest;
};

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_signal = PTHREAD_COND_INITIALIZER;
static long finished;

static void place(struct lineage *l, long slot)
{
    size_t size = l->min + (size_t)random_below(&l->random, l->max - l->min + 1);
    uint64_t tag = ((uint64_t)l->index << 40) | l->next_tag++;
    void *object = must_malloc(program, size);
    fill(object, size, tag);
    l->object[slot] = object;
    l->size[slot] = size;
    l->tag[slot] = tag;
    l->allocations++;
    l->bytes += size;
    l->digest += mix(tag, size);
}

static void *round_body(void *argument)
{
    struct lineage *l = argument;
    if (l->has_previous) {
        int error = pthread_join(l->previous, NULL);
        if (error != 0) {
            fprintf(stderr, "%s: pthread_join: %s\n", program, strerror(error));
            exit(1);
        }
    }
    for (long step = 0; step < l->steps; step++) {
        long slot = (long)random_below(&l->random, (uint64_t)l->slots);
        check(program, l->object[slot], l->size[slot], l->tag[slot]);
        free(l->object[slot]);
        place(l, slot);
    }
    if (l->rounds_left > 1) {
        l->rounds_left--;
        l->previous = pthread_self();
        l->has_previous = 1;
        pthread_t next;
        must_create(program, &next, round_body, l);
        return NULL;
    }
    for (long slot = 0; slot < l->slots; slot++) {
        check(program, l->object[slot], l->size[slot], l->tag[slot]);
        free(l->object[slot]);
    }
    /* Nobody joins the last thread of a lineage: main waits for the count instead. */
    pthread_detach(pthread_self());
    pthread_mutex_lock(&done_lock);
    finished++;
    pthread_cond_signal(&done_signal);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    long threads = argument(argc, argv, 1, 4, "threads");
    long rounds = argument(argc, argv, 2, 8, "rounds");
    long steps = argument(argc, argv, 3, 400000, "steps");
    long slots = argument(argc, argv, 4, 1000, "slots");
    long min = argument(argc, argv, 5, 16, "min");
    long max = argument(argc, argv, 6, 512, "max");
    if (min < MIN_OBJECT || max < min) {
        fprintf(stderr, "%s: need %d <= min <= max\n", program, MIN_OBJECT);
        return 2;
    }
    struct lineage *lineages = calloc((size_t)threads, sizeof *lineages);
    if (lineages == NULL)
        return 1;
    for (long i = 0; i < threads; i++) {
        struct lineage *l = &lineages[i];
        l->index = i;
        l->random = 0x1a250000ULL + (uint64_t)i;
        l->slots = slots;
        l->object = calloc((size_t)slots, sizeof *l->object);
        l->size = calloc((size_t)slots, sizeof *l->size);
        l->tag = calloc((size_t)slots, sizeof *l->tag);
        if (l->object == NULL || l->size == NULL || l->tag == NULL)
            return 1;
        l->rounds_left = rounds;
        l->steps = steps;
        l->min = (size_t)min;
        l->max = (size_t)max;
        for (long slot = 0; slot < slots; slot++)
            place(l, slot);
    }
    for (long i = 0; i < threads; i++) {
        pthread_t thread;
        must_create(program, &thread, round_body, &lineages[i]);
    }
    pthread_mutex_lock(&done_lock);
    while (finished < threads)
        pthread_cond_wait(&done_signal, &done_lock);
    pthread_mutex_unlock(&done_lock);

    uint64_t allocations = 0, bytes = 0, digest = 0;
    for (long i = 0; i < threads; i++) {
        allocations += lineages[i].allocations;
        bytes += lineages[i].bytes;
        digest = mix(digest, lineages[i].digest);
        free(lineages[i].object);
        free(lineages[i].size);
        free(lineages[i].tag);
    }
    free(lineages);
    printf("larson threads=%ld rounds=%ld steps=%ld slots=%ld sizes=%ld..%ld\n", threads,
           rounds, steps, slots, min, max);
    printf("allocations %llu bytes %llu digest %016llx\n", (unsigned long long)allocations,
           (unsigned long long)bytes, (unsigned long long)digest);
    return 0;
}
