/*
 * make_seeds.c — writes the seeds of tests/fuzz/corpus/ that need the library (run through
 * `scripts/fuzz.sh seeds`, which copies the plain fixture files itself):
 *
 *   make_seeds xlsx2csv FILE.xlsx          the sheet as CSV on stdout (the CMMD CSV seed)
 *   make_seeds hdf5 CORPUS_DIR FIXTURES    prepared/, checkpoint/ and features/ seeds:
 *       - real files written by the project (the manifest and MIAS fixtures converted at 8x8,
 *         a checkpoint of fuzz_checkpoint.c's layout), as raw HDF5 bytes;
 *       - descriptions (tests/fuzz/h5_harness.h) of a valid file of each kind, so mutations
 *         start from well-formed shapes, names and attributes.
 * Not part of any build: a seed is an input, the fuzzers never need this program.
 */
#include "data/data.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int put_file(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (!f) return 1;
    fputs(text, f);
    return fclose(f) != 0;
}

static int copy_file(const char *src, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *in = fopen(src, "rb"), *out = fopen(path, "wb");
    if (!in || !out) return 1;
    char buf[1 << 14];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, k, out);
    fclose(in);
    return fclose(out) != 0;
}

static int xlsx2csv(const char *path) {
    Csv c;
    Err e = {{0}};
    if (xlsx_read(path, &c, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    CsvWriter w = {.f = stdout, .delim = ',', .ncols = -1};
    for (int k = 0; k < c.ncols; k++) csv_put(&w, c.header[k]);
    csv_end_row(&w);
    for (size_t r = 0; r < c.nrows; r++) {
        for (int k = 0; k < c.ncols; k++) csv_put(&w, csv_get(&c, r, k));
        csv_end_row(&w);
    }
    csv_free(&c);
    return 0;
}

/* the layout of fuzz_checkpoint.c */
static void ckpt_declare(ParamStore *ps, int values_only) {
    params_init(ps);
    ps->values_only = values_only;
    param_(ps, "blocks.0.attn.qkv.weight", 6, 2);
    param_(ps, "blocks.0.attn.qkv.bias", 6);
    param_(ps, "cls_token", 1, 1, 2);
    buffer_(ps, "bn.running_mean", 3);
    params_alloc(ps);
}

static const char *PREPARED_DESC =
    "A / format s16 scalar = versa-prepared\n"
    "A / version i64 scalar = 1\n"
    "A / n i64 scalar = 2\n"
    "A / height i64 scalar = 4\n"
    "A / width i64 scalar = 3\n"
    "A / bits i64 scalar = 8\n"
    "A / max_value i64 scalar = 255\n"
    "A / dataset s8 scalar = fuzz\n"
    "A / label_names s32 scalar = density\\nbirads\n"
    "D /images u8 2,4,3 chunk=1,4,3 gzip = 0,10,20,255\n"
    "D /masks u8 2,4,3 chunk=1,4,3 gzip = 0,1\n"
    "D /mask_present u8 2 = 1,0\n"
    "D /labels/density i32 2 = 0,-1\n"
    "A /labels/density classes s16 scalar = A\\nB\\nC\\nD\n"
    "D /labels/birads i32 2 = 6,2\n"
    "A /labels/birads classes s16 scalar = 0\\n1\\n2\\n3\\n4\\n5\\n6\n"
    "D /findings u8 2,2 = 1,0\n"
    "A /findings classes s16 scalar = mass\\ncalcification\n"
    "D /view i8 2 = 0,1\n"
    "D /laterality i8 2 = 0,1\n"
    "D /split u8 2 = 0,2\n"
    "D /patient_id z64 2 = p1|p2\n"
    "D /image_id z128 2 = a.png|b/c.dcm\n"
    "D /orig_size i32 2,2 = 40,30\n"
    "D /transform f32 2,7 = 0,0,30,40,0,0.1,0.1\n"
    "D /box_offset i64 3 = 0,1,1\n"
    "D /boxes f32 1,4 = 0,0,2,2\n"
    "D /box_label i32 1 = 0\n";

/* the same, stored contiguous (hyperslab reads instead of raw chunks) and 16-bit */
static const char *PREPARED_DESC16 =
    "A / format s16 scalar = versa-prepared\n"
    "A / version i64 scalar = 1\n"
    "A / n i64 scalar = 1\n"
    "A / height i64 scalar = 2\n"
    "A / width i64 scalar = 2\n"
    "A / bits i64 scalar = 16\n"
    "A / max_value i64 scalar = 65535\n"
    "A / label_names vs scalar = pathology\n"
    "D /images u16 1,2,2 = 0,65535,7\n"
    "D /labels/pathology i32 1 = 2\n"
    "A /labels/pathology classes vs scalar = normal\\nbenign\\nmalignant\n"
    "D /view i8 1 = -1\n"
    "D /laterality i8 1 = -1\n"
    "D /split u8 1 = 1\n"
    "D /patient_id z64 1 = x\n"
    "D /image_id z128 1 = y\n"
    "D /orig_size i32 1,2 = 2,2\n"
    "D /transform f32 1,7 = 0\n"
    "D /box_offset i64 2 = 0,0\n"
    "D /boxes f32 0,4\n"
    "D /box_label i32 0\n";

static void ckpt_desc(char *out, size_t cap) {
    static const char *names[] = {"blocks.0.attn.qkv.weight", "blocks.0.attn.qkv.bias", "cls_token", "bn.running_mean"};
    static const char *dims[] = {"6,2", "6", "1,1,2", "3"};
    size_t k = 0;
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < 4; i++)
            k += (size_t)snprintf(out + k, cap - k, "D /%s.%s f32 %s = 0.5,-1,2\n", s ? "teacher" : "student", names[i], dims[i]);
    for (int m = 0; m < 2; m++)
        for (int i = 0; i < 3; i++)
            k += (size_t)snprintf(out + k, cap - k, "D /optim/%s/student.%s f32 %s = 0.01\n", m ? "v" : "m", names[i], dims[i]);
    snprintf(out + k, cap - k,
             "D /state/dino_center f32 5 = 0.1,0.2\n"
             "A / versa_format i64 scalar = 1\n"
             "A / step i64 scalar = 7\n"
             "A / rng_seed u64 scalar = 3\n"
             "A / rng_counter u64 scalar = 5\n"
             "A / rng_buf u32 4 = 1,2,3,4\n"
             "A / rng_buf_left i32 scalar = 2\n"
             "A / config vs scalar = train: {seed: 3, output_dir: runs/x}\\noptim: {lr: 0.1}\\n\n");
}

static int convert_fixture(const char *fx, const char *name, const char *out, int bits) {
    char root[1024], man[1100];
    snprintf(root, sizeof root, "%s/%s", fx, name);
    snprintf(man, sizeof man, "%s/manifest.csv", root);
    ConvertOpts o = convert_opts_default();
    o.raw_root = root;
    o.out_path = out;
    o.width = 8;
    o.height = 6;
    o.bits = bits;
    o.gzip = bits == 8 ? 4 : 0;
    o.manifest = man;
    ConvertStats st;
    Err e = {{0}};
    if (convert_dataset(name, &o, &st, &e)) {
        fprintf(stderr, "make_seeds: %s\n", e.msg);
        return 1;
    }
    return 0;
}

static int hdf5_seeds(const char *corpus, const char *fx) {
    char dir[1024], tmp[256];
    int bad = 0;
    snprintf(dir, sizeof dir, "%s/prepared", corpus);
    mkdir(dir, 0755);
    snprintf(tmp, sizeof tmp, "/tmp/versa_seed_%d.h5", (int)getpid());
    bad |= convert_fixture(fx, "manifest", tmp, 8) || copy_file(tmp, dir, "manifest_8bit.h5");
    bad |= convert_fixture(fx, "mias", tmp, 16) || copy_file(tmp, dir, "mias_16bit_masks.h5");
    unlink(tmp);
    bad |= put_file(dir, "desc_valid", PREPARED_DESC) || put_file(dir, "desc_contiguous16", PREPARED_DESC16);

    snprintf(dir, sizeof dir, "%s/checkpoint", corpus);
    mkdir(dir, 0755);
    ParamStore s, t;
    ckpt_declare(&s, 0);
    ckpt_declare(&t, 1);
    for (size_t i = 0; i < s.n_train; i++) s.data[i] = s.m[i] = s.v[i] = 0.25f * (float)i;
    float center[5] = {1, 2, 3, 4, 5};
    CkptStore st[2] = {{.prefix = "student.", .ps = &s, .with_optim = 1}, {.prefix = "teacher.", .ps = &t}};
    CkptExtra ex[1] = {{"dino_center", center, 5}};
    CkptMeta meta = {.step = 12, .config_text = "student: {arch: vit_tiny}\ntrain: {seed: 3}\n"};
    rng_init(&meta.rng, 3);
    (void)rng_u32(&meta.rng);
    Err e = {{0}};
    if (ckpt_save_stores(tmp, st, 2, &meta, ex, 1, &e)) {
        fprintf(stderr, "make_seeds: %s\n", e.msg);
        bad = 1;
    }
    bad |= copy_file(tmp, dir, "saved.h5");
    unlink(tmp);
    char desc[8192];
    ckpt_desc(desc, sizeof desc);
    bad |= put_file(dir, "desc_valid", desc);
    params_free(&s);
    params_free(&t);

    /* teacher features (fuzz_features.c: 4 samples), as `versa extract` lays them out */
    snprintf(dir, sizeof dir, "%s/features", corpus);
    mkdir(dir, 0755);
    bad |= put_file(dir, "valid",
                    "D /cls f32 4,3 = 0.5,-1,2\nD /gap f32 4,3 = 1,2,3\nD /dino_bottleneck f32 4,2 = 0.25,0.75\n"
                    "D /ibot_bottleneck f32 4,2 = -0.5,0.5\nD /sample f32 4 = 3,1,0,2\n");
    bad |= put_file(dir, "no_ibot",
                    "D /cls f32 4,3 = 0.5,-1,2\nD /gap f32 4,3 = 1,2,3\nD /dino_bottleneck f32 4,2 = 0.25,0.75\n"
                    "D /sample f32 4 = 0,1,2,3\n");
    bad |= put_file(dir, "near_valid",
                    "D /cls f32 4,3 = 0.5,nan,2\nD /gap f32 4 = 1\nD /dino_bottleneck f32 4,2,2 = 1\nD /sample f32 4 = 0,1,1,3\n");
    bad |= put_file(dir, "huge_dims",
                    "D /cls f32 2147483648,2147483648\nD /gap f32 4,1073741824\nD /dino_bottleneck f32 4,2 = 1\n"
                    "D /sample f64 4 = 0,1,2,3.5\n");
    return bad;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "xlsx2csv")) return xlsx2csv(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "hdf5")) return hdf5_seeds(argv[2], argv[3]);
    fprintf(stderr, "usage: make_seeds xlsx2csv FILE.xlsx | hdf5 CORPUS_DIR FIXTURES_DIR\n");
    return 2;
}
