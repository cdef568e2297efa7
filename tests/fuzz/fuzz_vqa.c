/*
 * fuzz_vqa.c — the MammoVQA JSON reader of the VQA protocol (bench/protocol_vqa.c,
 * bench_vqa_parse): records of {"Path", "Question topic", "Question", "Answer" (a string or a
 * list)}, other keys and any JSON value skipped, nesting limited.
 * Properties: a parse either fails with a message or gives records whose strings are
 * NUL-terminated inside their fields and whose answer count is in 0..BENCH_MAX_CLASSES; the
 * reader never reads past the buffer (the input is copied to an exact-size allocation, so ASan
 * sees any overread).
 * Seeds: MammoVQA-shaped files (single and multi-label answers, skipped keys and values, escapes).
 */
#include "tests/fuzz/fuzz.h"
#include "bench/bench.h"

static void fuzz_vqa_check_str(const char *s, size_t cap, const char *what) {
    if (!memchr(s, 0, cap)) fuzz_fail("record %s not terminated inside its %zu bytes", what, cap);
}

int fuzz_vqa(const uint8_t *data, size_t n) {
    char *buf = malloc(n ? n : 1);   /* exact size: no terminator for the parser to lean on */
    if (!buf) return 0;
    memcpy(buf, data, n);
    VqaRec *recs = NULL;
    size_t nr = 0;
    Err e = {{0}};
    if (bench_vqa_parse(buf, n, "fuzz.json", &recs, &nr, &e) == 0) {
        for (size_t i = 0; i < nr; i++) {
            const VqaRec *r = &recs[i];
            fuzz_vqa_check_str(r->path, sizeof r->path, "Path");
            fuzz_vqa_check_str(r->topic, sizeof r->topic, "Question topic");
            fuzz_vqa_check_str(r->question, sizeof r->question, "Question");
            if (r->n_answers < 0 || r->n_answers > BENCH_MAX_CLASSES) fuzz_fail("record %zu: %d answers", i, r->n_answers);
            for (int k = 0; k < r->n_answers; k++) fuzz_vqa_check_str(r->answers[k], BENCH_NAME_LEN, "Answer");
        }
        free(recs);
    } else if (!e.msg[0]) {
        fuzz_fail("bench_vqa_parse failed without a message");
    }
    free(buf);
    return 0;
}

FUZZ_TARGET(fuzz_vqa)
