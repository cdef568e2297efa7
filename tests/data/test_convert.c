/* test_convert.c — every converter on a tiny raw fixture in its dataset's exact on-disk layout
 * (tests/data/fixtures/<dataset>/, committed), plus wrong headers / values / missing images.
 *
 * The fixtures are made by this program:  ./build/tests/data/test_convert --make-fixtures
 * (run from the repo root; DICOMs through data/dicom.h's writer, PGM/PNG through data/image.h,
 * the CMMD .xlsx through a small stored/deflated zip writer below).  The tests then read only
 * the committed files.  Every fixture image is a 64x48 (W x H) 12-bit "breast": a bright half
 * ellipse on the chest-wall side (left for L, right for R as hung) with a brighter lesion, so the
 * breast crop, the flip to the left and the box/mask geometry are all exercised. */
#include "tests/common/testutil.h"
#include "data/prepared.h"
#include "data/dicom.h"
#include "data/synth.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define FX "tests/data/fixtures"
#define IW 64
#define IH 48
#define OUT 32

static char tmpdir[256];

/* ------------------------------------------------------------------------------------------ */
/* fixture content shared by the maker and the checks */

typedef struct Lesion {
    int x0, y0, x1, y1;   /* source pixels, [x0, x1) x [y0, y1), as hung */
} Lesion;

/* lesion of a breast image: inside the breast whichever side it is on */
static Lesion lesion_at(int right, int k) {
    int x0 = right ? IW - 26 + 3 * k : 12 + 3 * k, y0 = 16 + 4 * k;
    return (Lesion){x0, y0, x0 + 9, y0 + 7};
}

static void make_breast(Image *im, int right, int seed, const Lesion *les, int nles) {
    Err e;
    assert_int_equal(image_alloc(im, IW, IH, 12, &e), 0);
    Rng r;
    rng_init(&r, (uint64_t)seed);
    for (int y = 0; y < IH; y++)
        for (int x = 0; x < IW; x++) {
            double dx = (right ? IW - 1 - x : x) / 40.0, dy = (y - IH / 2.0) / 21.0;
            double v = 0;
            if (dx * dx + dy * dy < 1.0) v = 1800 + 600 * (1 - dx) + 150 * rng_uniform(&r);
            im->px[y * IW + x] = (uint16_t)v;
        }
    for (int k = 0; k < nles; k++)
        for (int y = les[k].y0; y < les[k].y1; y++)
            for (int x = les[k].x0; x < les[k].x1; x++) im->px[y * IW + x] = 3800;
}

static void mkdirs(const char *path) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(buf, 0755);
            *p = '/';
        }
    mkdir(buf, 0755);
}

static void mkparent(const char *file) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", file);
    char *s = strrchr(buf, '/');
    if (s) {
        *s = 0;
        mkdirs(buf);
    }
}

static void write_text(const char *path, const char *text) {
    mkparent(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void write_dicom(const char *path, const Image *im, char lat, const char *view, const char *orient,
                        const char *patient) {
    DicomInfo info;
    dicom_info_init(&info);
    info.laterality = lat;
    snprintf(info.view, sizeof info.view, "%s", view ? view : "");
    snprintf(info.patient_orientation, sizeof info.patient_orientation, "%s", orient ? orient : "");
    snprintf(info.patient_id, sizeof info.patient_id, "%s", patient);
    info.bits_stored = im->bits <= 8 ? 8 : 12;
    info.high_bit = info.bits_stored - 1;
    info.bits_allocated = im->bits <= 8 ? 8 : 16;
    Err e;
    mkparent(path);
    if (dicom_write(path, &info, im, &e)) fail_msg("%s", e.msg);
}

static void write_breast_dicom(const char *path, int right, int seed, const Lesion *les, int nles, const char *view,
                               const char *orient, const char *patient) {
    Image im;
    make_breast(&im, right, seed, les, nles);
    write_dicom(path, &im, right ? 'R' : 'L', view, orient, patient);
    image_free(&im);
}

static void write_mask_dicom(const char *path, const Lesion *l) {
    Image m;
    Err e;
    assert_int_equal(image_alloc(&m, IW, IH, 8, &e), 0);
    for (int y = l->y0; y < l->y1; y++)
        for (int x = l->x0; x < l->x1; x++) m.px[y * IW + x] = 255;
    write_dicom(path, &m, 0, NULL, NULL, "mask");
    image_free(&m);
}

static void write_crop_dicom(const char *path) {   /* CBIS "cropped image": small, not binary */
    Image c;
    Err e;
    assert_int_equal(image_alloc(&c, 12, 10, 12, &e), 0);
    for (int i = 0; i < 120; i++) c.px[i] = (uint16_t)(1000 + 20 * i);
    write_dicom(path, &c, 0, NULL, NULL, "crop");
    image_free(&c);
}

/* ---- a minimal xlsx (zip) writer for the CMMD fixture ---- */

typedef struct ZipEnt {
    const char *name;
    uint8_t *data;
    size_t n, csize;
    uint32_t crc;
    int method;
    long offset;
} ZipEnt;

static void put16(FILE *f, unsigned v) {
    fputc(v & 255, f);
    fputc((v >> 8) & 255, f);
}
static void put32(FILE *f, unsigned long v) {
    put16(f, v & 0xFFFF);
    put16(f, (v >> 16) & 0xFFFF);
}

static void write_zip(const char *path, ZipEnt *ents, int n) {
    mkparent(path);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (int k = 0; k < n; k++) {
        ZipEnt *z = &ents[k];
        z->crc = (uint32_t)crc32(0, (const Bytef *)z->name, 0);
        z->crc = (uint32_t)crc32(0L, z->data, (uInt)z->n);
        uint8_t *out = z->data;
        z->csize = z->n;
        if (z->method == 8) {   /* raw deflate */
            z_stream s = {0};
            deflateInit2(&s, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
            out = malloc(deflateBound(&s, (uLong)z->n));
            s.next_in = z->data;
            s.avail_in = (uInt)z->n;
            s.next_out = out;
            s.avail_out = (uInt)deflateBound(&s, (uLong)z->n);
            deflate(&s, Z_FINISH);
            z->csize = s.total_out;
            deflateEnd(&s);
        }
        z->offset = ftell(f);
        put32(f, 0x04034b50);
        put16(f, 20);
        put16(f, 0);
        put16(f, (unsigned)z->method);
        put16(f, 0);
        put16(f, 0x21);
        put32(f, z->crc);
        put32(f, z->csize);
        put32(f, z->n);
        put16(f, (unsigned)strlen(z->name));
        put16(f, 0);
        fwrite(z->name, 1, strlen(z->name), f);
        fwrite(out, 1, z->csize, f);
        if (out != z->data) free(out);
    }
    long cd = ftell(f);
    for (int k = 0; k < n; k++) {
        ZipEnt *z = &ents[k];
        put32(f, 0x02014b50);
        put16(f, 20);
        put16(f, 20);
        put16(f, 0);
        put16(f, (unsigned)z->method);
        put16(f, 0);
        put16(f, 0x21);
        put32(f, z->crc);
        put32(f, z->csize);
        put32(f, z->n);
        put16(f, (unsigned)strlen(z->name));
        put16(f, 0);
        put16(f, 0);
        put16(f, 0);
        put16(f, 0);
        put32(f, 0);
        put32(f, (unsigned long)z->offset);
        fwrite(z->name, 1, strlen(z->name), f);
    }
    long cdn = ftell(f) - cd;
    put32(f, 0x06054b50);
    put16(f, 0);
    put16(f, 0);
    put16(f, (unsigned)n);
    put16(f, (unsigned)n);
    put32(f, (unsigned long)cdn);
    put32(f, (unsigned long)cd);
    put16(f, 0);
    fclose(f);
}

/* rows of cells; a cell starting with '#' is numeric; strings go to sharedStrings */
static void write_xlsx(const char *path, const char *const *cells, int rows, int cols) {
    char *ss = calloc(1, 65536), *sheet = calloc(1, 65536);
    int nstr = 0;
    strcat(sheet, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<worksheet xmlns=\"http://schemas."
                  "openxmlformats.org/spreadsheetml/2006/main\"><sheetData>");
    char tmp[512];
    for (int r = 0; r < rows; r++) {
        snprintf(tmp, sizeof tmp, "<row r=\"%d\">", r + 1);
        strcat(sheet, tmp);
        for (int c = 0; c < cols; c++) {
            const char *v = cells[r * cols + c];
            if (!v || !*v) continue;   /* empty cells are simply absent */
            if (v[0] == '#')
                snprintf(tmp, sizeof tmp, "<c r=\"%c%d\"><v>%s</v></c>", 'A' + c, r + 1, v + 1);
            else {
                snprintf(tmp, sizeof tmp, "<c r=\"%c%d\" t=\"s\"><v>%d</v></c>", 'A' + c, r + 1, nstr++);
                strcat(ss, "<si><t>");
                strcat(ss, v);
                strcat(ss, "</t></si>");
            }
            strcat(sheet, tmp);
        }
        strcat(sheet, "</row>");
    }
    strcat(sheet, "</sheetData></worksheet>");
    char *sst = calloc(1, 70000);
    snprintf(sst, 70000, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<sst xmlns=\"http://schemas."
             "openxmlformats.org/spreadsheetml/2006/main\" count=\"%d\" uniqueCount=\"%d\">%s</sst>", nstr, nstr, ss);
    static const char *ct = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Types xmlns=\"http://schemas."
        "openxmlformats.org/package/2006/content-types\"><Default Extension=\"rels\" ContentType=\"application/vnd."
        "openxmlformats-package.relationships+xml\"/><Default Extension=\"xml\" ContentType=\"application/xml\"/>"
        "<Override PartName=\"/xl/workbook.xml\" ContentType=\"application/vnd.openxmlformats-officedocument."
        "spreadsheetml.sheet.main+xml\"/><Override PartName=\"/xl/worksheets/sheet1.xml\" ContentType=\"application/"
        "vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml\"/><Override PartName=\"/xl/sharedStrings.xml\" "
        "ContentType=\"application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml\"/></Types>";
    static const char *rels = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Relationships xmlns="
        "\"http://schemas.openxmlformats.org/package/2006/relationships\"><Relationship Id=\"rId1\" Type=\"http://"
        "schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" Target=\"xl/workbook.xml\"/>"
        "</Relationships>";
    static const char *wb = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<workbook xmlns=\"http://"
        "schemas.openxmlformats.org/spreadsheetml/2006/main\" xmlns:r=\"http://schemas.openxmlformats.org/"
        "officeDocument/2006/relationships\"><sheets><sheet name=\"Sheet1\" sheetId=\"1\" r:id=\"rId1\"/></sheets>"
        "</workbook>";
    static const char *wbrels = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\n<Relationships xmlns="
        "\"http://schemas.openxmlformats.org/package/2006/relationships\"><Relationship Id=\"rId1\" Type=\"http://"
        "schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet\" Target=\"worksheets/sheet1.xml\"/>"
        "<Relationship Id=\"rId2\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/"
        "sharedStrings\" Target=\"sharedStrings.xml\"/></Relationships>";
    ZipEnt ents[] = {
        {"[Content_Types].xml", (uint8_t *)ct, strlen(ct), 0, 0, 0, 0},
        {"_rels/.rels", (uint8_t *)rels, strlen(rels), 0, 0, 0, 0},
        {"xl/workbook.xml", (uint8_t *)wb, strlen(wb), 0, 0, 0, 0},
        {"xl/_rels/workbook.xml.rels", (uint8_t *)wbrels, strlen(wbrels), 0, 0, 0, 0},
        {"xl/worksheets/sheet1.xml", (uint8_t *)sheet, strlen(sheet), 0, 0, 8, 0},
        {"xl/sharedStrings.xml", (uint8_t *)sst, strlen(sst), 0, 0, 0, 0},
    };
    write_zip(path, ents, 6);
    free(ss);
    free(sheet);
    free(sst);
}

/* ------------------------------------------------------------------------------------------ */
/* the fixtures */

/* VinDr: 3 studies; (study, image, lat, view, birads, density, split, n lesions) */
typedef struct VdImg {
    const char *study, *image;
    int right;
    const char *view, *birads, *density, *split;
    int nles;
} VdImg;

static const VdImg VD[6] = {
    {"a1b2c3d4e5f60718293a4b5c6d7e8f90", "0c1d2e3f405162738495a6b7c8d9eaf1", 0, "CC", "BI-RADS 4", "DENSITY C", "training", 1},
    {"a1b2c3d4e5f60718293a4b5c6d7e8f90", "1c1d2e3f405162738495a6b7c8d9eaf1", 1, "MLO", "BI-RADS 1", "DENSITY C", "training", 0},
    {"b1b2c3d4e5f60718293a4b5c6d7e8f90", "2c1d2e3f405162738495a6b7c8d9eaf1", 0, "MLO", "BI-RADS 2", "DENSITY B", "training", 0},
    {"b1b2c3d4e5f60718293a4b5c6d7e8f90", "3c1d2e3f405162738495a6b7c8d9eaf1", 1, "CC", "BI-RADS 5", "DENSITY B", "training", 2},
    {"c1b2c3d4e5f60718293a4b5c6d7e8f90", "4c1d2e3f405162738495a6b7c8d9eaf1", 0, "CC", "BI-RADS 3", "DENSITY D", "test", 1},
    {"c1b2c3d4e5f60718293a4b5c6d7e8f90", "5c1d2e3f405162738495a6b7c8d9eaf1", 1, "MLO", "BI-RADS 1", "DENSITY A", "test", 0},
};
static const char *VD_CATS[6][2] = {{"['Mass']", NULL}, {NULL, NULL}, {NULL, NULL},
                                    {"['Mass', 'Suspicious Calcification']", "['Architectural Distortion']"},
                                    {"['Focal Asymmetry']", NULL}, {NULL, NULL}};

static void make_vindr(const char *root) {
    char path[512], csv[8192] = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,"
                                "breast_density,split\n";
    char fcsv[8192] = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
                      "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split\n";
    for (int i = 0; i < 6; i++) {
        const VdImg *v = &VD[i];
        Lesion les[2] = {lesion_at(v->right, 0), lesion_at(v->right, 1)};
        snprintf(path, sizeof path, "%s/images/%s/%s.dicom", root, v->study, v->image);
        write_breast_dicom(path, v->right, 100 + i, les, v->nles, v->view, NULL, v->study);
        char row[600];
        snprintf(row, sizeof row, "%s,s%d,%s,%c,%s,%d,%d,%s,%s,%s\n", v->study, i, v->image, v->right ? 'R' : 'L',
                 v->view, IH, IW, v->birads, v->density, v->split);
        strcat(csv, row);
        if (v->nles == 0) {
            snprintf(row, sizeof row, "%s,s%d,%s,%c,%s,%d,%d,%s,%s,['No Finding'],,,,,,%s\n", v->study, i, v->image,
                     v->right ? 'R' : 'L', v->view, IH, IW, v->birads, v->density, v->split);
            strcat(fcsv, row);
        }
        for (int k = 0; k < v->nles; k++) {
            /* the second box of image 3 starts at a negative x (clamped to 0 by the converter) */
            double x0 = les[k].x0, y0 = les[k].y0;
            if (i == 3 && k == 1) x0 = -3.5;
            snprintf(row, sizeof row, "%s,s%d,%s,%c,%s,%d,%d,%s,%s,\"%s\",BI-RADS 4,%.2f,%.2f,%.2f,%.2f,%s\n", v->study, i,
                     v->image, v->right ? 'R' : 'L', v->view, IH, IW, v->birads, v->density, VD_CATS[i][k], x0, y0,
                     (double)les[k].x1, (double)les[k].y1, v->split);
            strcat(fcsv, row);
        }
    }
    snprintf(path, sizeof path, "%s/breast-level_annotations.csv", root);
    write_text(path, csv);
    snprintf(path, sizeof path, "%s/finding_annotations.csv", root);
    write_text(path, fcsv);
    /* the wrong-header fixture: same files, "breast_density" misspelt */
    char bad[8192];
    snprintf(bad, sizeof bad, "%s", csv);
    char *p = strstr(bad, "breast_density");
    memcpy(p, "breast_densty,", 14);
    memmove(p + 13, p + 14, strlen(p + 14) + 1);
    snprintf(path, sizeof path, "%s_bad_header/breast-level_annotations.csv", root);
    write_text(path, bad);
    snprintf(path, sizeof path, "%s_bad_header/finding_annotations.csv", root);
    write_text(path, fcsv);
}

/* CBIS-DDSM */
static const char *CB_MASS_HDR = "patient_id,breast_density,left or right breast,image view,abnormality id,"
                                 "abnormality type,mass shape,mass margins,assessment,pathology,subtlety,image file path,"
                                 "cropped image file path,ROI mask file path\n";
static const char *CB_CALC_HDR = "patient_id,breast density,left or right breast,image view,abnormality id,"
                                 "abnormality type,calc type,calc distribution,assessment,pathology,subtlety,"
                                 "image file path,cropped image file path,ROI mask file path\n";

static void make_cbis(const char *root) {
    char p[600];
    const char *u1 = "1.3.6.1.4.1.9590.100.1.2.111", *u2 = "1.3.6.1.4.1.9590.100.1.2.222";
    /* P_00001 LEFT CC: two masses on one image, CSV-literal layout */
    Lesion l1[2] = {lesion_at(0, 0), lesion_at(0, 1)};
    snprintf(p, sizeof p, "%s/Mass-Training_P_00001_LEFT_CC/%s/%s/000000.dcm", root, u1, u2);
    write_breast_dicom(p, 0, 200, l1, 2, "CC", NULL, "P_00001");
    /* ROI 1: the CSV points at 000000.dcm, which is the crop; the mask is 000001.dcm */
    snprintf(p, sizeof p, "%s/Mass-Training_P_00001_LEFT_CC_1/%s.1/%s.1/000000.dcm", root, u1, u2);
    write_crop_dicom(p);
    snprintf(p, sizeof p, "%s/Mass-Training_P_00001_LEFT_CC_1/%s.1/%s.1/000001.dcm", root, u1, u2);
    write_mask_dicom(p, &l1[0]);
    snprintf(p, sizeof p, "%s/Mass-Training_P_00001_LEFT_CC_2/%s.2/%s.2/000000.dcm", root, u1, u2);
    write_mask_dicom(p, &l1[1]);
    /* P_00002 RIGHT CC calcification */
    Lesion l2 = lesion_at(1, 0);
    snprintf(p, sizeof p, "%s/Calc-Training_P_00002_RIGHT_CC/%s.3/%s.3/000000.dcm", root, u1, u2);
    write_breast_dicom(p, 1, 201, &l2, 1, "CC", NULL, "P_00002");
    snprintf(p, sizeof p, "%s/Calc-Training_P_00002_RIGHT_CC_1/%s.4/%s.4/000000.dcm", root, u1, u2);
    write_mask_dicom(p, &l2);
    /* P_00003 RIGHT MLO mass, test split, in the NBIA download layout (CSV paths do not match) */
    Lesion l3 = lesion_at(1, 1);
    snprintf(p, sizeof p, "%s/CBIS-DDSM/Mass-Test_P_00003_RIGHT_MLO/07-20-2016-DDSM-12345/1.000000-full mammogram images-54321/1-1.dcm", root);
    write_breast_dicom(p, 1, 202, &l3, 1, "MLO", NULL, "P_00003");
    snprintf(p, sizeof p, "%s/CBIS-DDSM/Mass-Test_P_00003_RIGHT_MLO_1/07-21-2016-DDSM-1/1.000000-ROI mask images-2/1-1.dcm", root);
    write_crop_dicom(p);
    snprintf(p, sizeof p, "%s/CBIS-DDSM/Mass-Test_P_00003_RIGHT_MLO_1/07-21-2016-DDSM-1/1.000000-ROI mask images-2/1-2.dcm", root);
    write_mask_dicom(p, &l3);
    char csv[4096];
    snprintf(csv, sizeof csv,
             "%sP_00001,3,LEFT,CC,1,mass,IRREGULAR,SPICULATED,4,MALIGNANT,5,Mass-Training_P_00001_LEFT_CC/%s/%s/000000.dcm,"
             "Mass-Training_P_00001_LEFT_CC_1/%s.1/%s.1/000000.dcm,\"Mass-Training_P_00001_LEFT_CC_1/%s.1/%s.1/000000.dcm\n\"\n"
             "P_00001,3,LEFT,CC,2,mass,OVAL,CIRCUMSCRIBED,3,BENIGN,3,Mass-Training_P_00001_LEFT_CC/%s/%s/000000.dcm,"
             "Mass-Training_P_00001_LEFT_CC_2/%s.2/%s.2/000001.dcm,Mass-Training_P_00001_LEFT_CC_2/%s.2/%s.2/000000.dcm\n",
             CB_MASS_HDR, u1, u2, u1, u2, u1, u2, u1, u2, u1, u2, u1, u2);
    snprintf(p, sizeof p, "%s/mass_case_description_train_set.csv", root);
    write_text(p, csv);
    snprintf(csv, sizeof csv,
             "%sP_00003,2,RIGHT,MLO,1,mass,ROUND,OBSCURED,0,BENIGN,2,Mass-Test_P_00003_RIGHT_MLO/1.3.6.1.4.1.9590.100.1.2.9/"
             "1.3.6.1.4.1.9590.100.1.2.8/000000.dcm,Mass-Test_P_00003_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.7/"
             "1.3.6.1.4.1.9590.100.1.2.6/000000.dcm,Mass-Test_P_00003_RIGHT_MLO_1/1.3.6.1.4.1.9590.100.1.2.7/"
             "1.3.6.1.4.1.9590.100.1.2.6/000001.dcm\n", CB_MASS_HDR);
    snprintf(p, sizeof p, "%s/mass_case_description_test_set.csv", root);
    write_text(p, csv);
    snprintf(csv, sizeof csv,
             "%sP_00002,1,RIGHT,CC,1,calcification,PLEOMORPHIC-FINE_LINEAR_BRANCHING,CLUSTERED,2,BENIGN_WITHOUT_CALLBACK,4,"
             "Calc-Training_P_00002_RIGHT_CC/%s.3/%s.3/000000.dcm,Calc-Training_P_00002_RIGHT_CC_1/%s.4/%s.4/000001.dcm,"
             "Calc-Training_P_00002_RIGHT_CC_1/%s.4/%s.4/000000.dcm\n", CB_CALC_HDR, u1, u2, u1, u2, u1, u2);
    snprintf(p, sizeof p, "%s/calc_case_description_train_set.csv", root);
    write_text(p, csv);
    snprintf(p, sizeof p, "%s/calc_case_description_test_set.csv", root);
    write_text(p, CB_CALC_HDR);
}

/* INbreast */
static void make_inbreast(const char *root) {
    char p[600];
    Lesion mass = lesion_at(0, 0);
    snprintf(p, sizeof p, "%s/AllDICOMs/22678622_a1b2c3d4e5f60718_MG_L_CC_ANON.dcm", root);
    write_breast_dicom(p, 0, 300, &mass, 1, "CC", NULL, "removed");
    snprintf(p, sizeof p, "%s/AllDICOMs/22678646_a1b2c3d4e5f60718_MG_R_CC_ANON.dcm", root);
    write_breast_dicom(p, 1, 301, NULL, 0, "CC", NULL, "removed");
    snprintf(p, sizeof p, "%s/AllDICOMs/53586896_0fedcba987654321_MG_L_ML_ANON.dcm", root);
    write_breast_dicom(p, 0, 302, NULL, 0, "MLO", NULL, "removed");
    snprintf(p, sizeof p, "%s/INbreast.csv", root);
    write_text(p, "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads\n"
                  "removed;removed;L;CC;201001;22678622;2;4a\n"
                  "removed;removed;R;CC;201001;22678646;2;1\n"
                  "removed;removed;L;MLO;200910;53586896; ;2\n"
                  ";;;;;;;\n");
    /* the mass polygon (a diamond inside the lesion), a single-point calcification, a cluster
     * outline, and an unnamed ROI that is ignored */
    char xml[8192];
    snprintf(xml, sizeof xml,
             "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
             "<!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n"
             "<plist version=\"1.0\">\n<dict>\n\t<key>Images</key>\n\t<array>\n\t\t<dict>\n"
             "\t\t\t<key>ImageIndex</key>\n\t\t\t<integer>0</integer>\n\t\t\t<key>NumberOfROIs</key>\n\t\t\t<integer>4</integer>\n"
             "\t\t\t<key>ROIs</key>\n\t\t\t<array>\n"
             "\t\t\t\t<dict>\n\t\t\t\t\t<key>Area</key>\n\t\t\t\t\t<real>40.5</real>\n\t\t\t\t\t<key>Name</key>\n"
             "\t\t\t\t\t<string>Mass</string>\n\t\t\t\t\t<key>NumberOfPoints</key>\n\t\t\t\t\t<integer>4</integer>\n"
             "\t\t\t\t\t<key>Point_px</key>\n\t\t\t\t\t<array>\n"
             "\t\t\t\t\t\t<string>(%d.000000, %d.500000)</string>\n\t\t\t\t\t\t<string>(%d.500000, %d.000000)</string>\n"
             "\t\t\t\t\t\t<string>(%d.000000, %d.500000)</string>\n\t\t\t\t\t\t<string>(%d.500000, %d.000000)</string>\n"
             "\t\t\t\t\t</array>\n\t\t\t\t</dict>\n"
             "\t\t\t\t<dict>\n\t\t\t\t\t<key>Name</key>\n\t\t\t\t\t<string>Calcification</string>\n"
             "\t\t\t\t\t<key>Point_px</key>\n\t\t\t\t\t<array>\n\t\t\t\t\t\t<string>(30.25, 30.75)</string>\n"
             "\t\t\t\t\t</array>\n\t\t\t\t</dict>\n"
             "\t\t\t\t<dict>\n\t\t\t\t\t<key>Name</key>\n\t\t\t\t\t<string>Cluster</string>\n"
             "\t\t\t\t\t<key>Point_px</key>\n\t\t\t\t\t<array>\n\t\t\t\t\t\t<string>(26.0, 26.0)</string>\n"
             "\t\t\t\t\t\t<string>(34.0, 26.0)</string>\n\t\t\t\t\t\t<string>(34.0, 34.0)</string>\n"
             "\t\t\t\t\t</array>\n\t\t\t\t</dict>\n"
             "\t\t\t\t<dict>\n\t\t\t\t\t<key>Name</key>\n\t\t\t\t\t<string>Unnamed</string>\n"
             "\t\t\t\t\t<key>Point_px</key>\n\t\t\t\t\t<array>\n\t\t\t\t\t\t<string>(1.0, 1.0)</string>\n"
             "\t\t\t\t\t\t<string>(5.0, 1.0)</string>\n\t\t\t\t\t\t<string>(5.0, 5.0)</string>\n"
             "\t\t\t\t\t</array>\n\t\t\t\t</dict>\n"
             "\t\t\t</array>\n\t\t</dict>\n\t</array>\n</dict>\n</plist>\n",
             mass.x0, (mass.y0 + mass.y1) / 2, (mass.x0 + mass.x1) / 2, mass.y0, mass.x1, (mass.y0 + mass.y1) / 2,
             (mass.x0 + mass.x1) / 2, mass.y1);
    snprintf(p, sizeof p, "%s/AllXML/22678622.xml", root);
    write_text(p, xml);
}

/* CMMD */
static void make_cmmd(const char *root) {
    char p[600];
    /* D1-0001: left breast CC + MLO (ViewPosition present), a calcification, benign */
    snprintf(p, sizeof p, "%s/CMMD/D1-0001/07-18-2010-NA-NA-12345/1.000000-NA-67890/1-1.dcm", root);
    write_breast_dicom(p, 0, 400, NULL, 0, "CC", "A\\R", "D1-0001");
    snprintf(p, sizeof p, "%s/CMMD/D1-0001/07-18-2010-NA-NA-12345/1.000000-NA-67890/1-2.dcm", root);
    write_breast_dicom(p, 0, 401, NULL, 0, "MLO", "A\\FR", "D1-0001");
    /* D2-0001: both breasts, no ViewPosition (PatientOrientation only); R malignant, L normal */
    const char *lat = "LLRR";
    const char *orient[4] = {"A\\R", "A\\FR", "P\\L", "P\\FL"};
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/CMMD/D2-0001/08-02-2011-NA-NA-22222/1.000000-NA-33333/1-%d.dcm", root, k + 1);
        write_breast_dicom(p, lat[k] == 'R', 402 + k, NULL, 0, NULL, orient[k], "D2-0001");
    }
    const char *cells[] = {
        "ID1", "LeftRight", "Age", "number", "abnormality", "classification", "subtype",
        "D1-0001", "L", "#44", "#2", "calcification", "Benign", "",
        "D2-0001", "R", "#51", "#2", "mass", "Malignant", "Luminal A",
    };
    snprintf(p, sizeof p, "%s/CMMD_clinicaldata_revision.xlsx", root);
    write_xlsx(p, cells, 3, 7);
}

/* RSNA */
static void make_rsna(const char *root) {
    char p[600];
    static const struct { const char *pat, *img; int right; const char *view, *row; } R[4] = {
        {"10006", "462822612", 0, "CC", "2,10006,462822612,L,CC,61.0,0,0,0,,0,,29,False"},
        {"10006", "1459541791", 1, "MLO", "2,10006,1459541791,R,MLO,61.0,1,1,1,0,0,B,29,False"},
        {"10011", "220375232", 0, "ML", "2,10011,220375232,L,ML,55.0,0,0,0,1,0,C,21,True"},
        {"10011", "270344397", 1, "CC", "2,10011,270344397,R,CC,55.0,0,0,0,2,1,D,21,False"},
    };
    char csv[2048] = "site_id,patient_id,image_id,laterality,view,age,cancer,biopsy,invasive,BIRADS,implant,density,"
                     "machine_id,difficult_negative_case\n";
    for (int k = 0; k < 4; k++) {
        snprintf(p, sizeof p, "%s/train_images/%s/%s.dcm", root, R[k].pat, R[k].img);
        write_breast_dicom(p, R[k].right, 500 + k, NULL, 0, R[k].view, NULL, R[k].pat);
        strcat(csv, R[k].row);
        strcat(csv, "\n");
    }
    snprintf(p, sizeof p, "%s/train.csv", root);
    write_text(p, csv);
}

/* EMBED */
static void make_embed(const char *root) {
    char p[600];
    static const struct { const char *empi, *acc, *sop, *lat, *view, *type, *roi; } M[4] = {
        {"11111111", "6000001", "1.2.840.1.1", "L", "CC", "2D", "[[16, 12, 23, 21]]"},
        {"11111111", "6000001", "1.2.840.1.2", "R", "MLO", "2D", ""},
        {"11111111", "6000001", "1.2.840.1.3", "L", "CC", "C-view", ""},
        {"22222222", "6000002", "1.2.840.2.1", "R", "CC", "2D", "()"},
    };
    char csv[4096] = "empi_anon,acc_anon,anon_dicom_path,png_path,png_filename,study_date_anon,StudyDescription,"
                     "SeriesDescription,FinalImageType,ImageLateralityFinal,ViewPosition,spot_mag,num_roi,ROI_coords,"
                     "SRC_DST,match_level\n";
    for (int k = 0; k < 4; k++) {
        if (strcmp(M[k].type, "2D") == 0) {
            Lesion l = {12, 16, 21, 23};
            snprintf(p, sizeof p, "%s/cohort_1/%s/%s/%s.dcm", root, M[k].empi, M[k].acc, M[k].sop);
            write_breast_dicom(p, M[k].lat[0] == 'R', 600 + k, &l, k == 0, M[k].view, NULL, M[k].empi);
        }
        char row[512];
        snprintf(row, sizeof row, "%s,%s,/mnt/NAS2/mammo/anon_dicom/cohort_1/%s/%s/%s.dcm,,,2019-01-01,MG screen,"
                 "series,%s,%s,%s,,%d,\"%s\",,1\n", M[k].empi, M[k].acc, M[k].empi, M[k].acc, M[k].sop, M[k].type,
                 M[k].lat, M[k].view, M[k].roi[0] == '[' ? 1 : 0, M[k].roi);
        strcat(csv, row);
    }
    snprintf(p, sizeof p, "%s/tables/EMBED_OpenData_metadata.csv", root);
    write_text(p, csv);
    snprintf(p, sizeof p, "%s/tables/EMBED_OpenData_clinical.csv", root);
    write_text(p, "empi_anon,acc_anon,study_date_anon,desc,tissueden,asses,numfind,side,massshape,massmargin,"
                  "calcfind,calcdistri,path_severity,age_at_study\n"
                  "11111111,6000001,2019-01-01,MG Diag,3,S,1,L,X,S,,,0.0,57\n"
                  "11111111,6000001,2019-01-01,MG Diag,3,B,2,L,O,D,,,4.0,57\n"
                  "11111111,6000001,2019-01-01,MG Diag,3,N,1,R,,,,,,57\n"
                  "22222222,6000002,2019-03-01,MG screen,5,A,1,B,,,,,,60\n");
}

/* MIAS: 64x64 8-bit PGMs, Info.txt with origin bottom-left */
static void make_mias(const char *root) {
    char p[600];
    for (int k = 1; k <= 4; k++) {
        Image im, im8;
        int right = k % 2 == 1;   /* odd = right */
        make_breast(&im, right, 700 + k, NULL, 0);
        Err e;
        assert_int_equal(image_alloc(&im8, 64, 64, 8, &e), 0);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++) im8.px[y * 64 + x] = y < IH ? (uint16_t)(im.px[y * IW + x] >> 4) : 0;
        /* lesion disc at (cx, row) for the located ones */
        if (k == 1 || k == 3) {
            int cx = k == 1 ? 40 : 44, Y = k == 1 ? 40 : 36, rad = 5, row = 63 - Y;
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++)
                    if ((x - cx) * (x - cx) + (y - row) * (y - row) <= rad * rad) im8.px[y * 64 + x] = 250;
        }
        snprintf(p, sizeof p, "%s/mdb%03d.pgm", root, k);
        mkparent(p);
        if (image_save_pgm(p, &im8, &e)) fail_msg("%s", e.msg);
        image_free(&im);
        image_free(&im8);
    }
    snprintf(p, sizeof p, "%s/Info.txt", root);
    write_text(p, "REFNUM BG CLASS SEVERITY X Y RADIUS\n"
                  "mdb001 G CIRC B 40 40 5\n"
                  "mdb002 G NORM\n"
                  "mdb003 D CALC M 44 36 5\n"
                  "mdb003 D SPIC B 44 36 3\n"
                  "mdb004 F CALC B\n");
}

/* generic manifest: PNGs + a mask */
static void make_manifest(const char *root) {
    char p[600];
    for (int k = 0; k < 4; k++) {
        Image im, im8;
        Lesion l = lesion_at(0, 0);
        make_breast(&im, 0, 800 + k, &l, 1);
        Err e;
        assert_int_equal(image_alloc(&im8, IW, IH, 8, &e), 0);
        for (int i = 0; i < IW * IH; i++) im8.px[i] = (uint16_t)(im.px[i] >> 4);
        snprintf(p, sizeof p, "%s/img/case%d.png", root, k);
        mkparent(p);
        if (image_save_png(p, &im8, &e)) fail_msg("%s", e.msg);
        if (k == 0) {
            Image m;
            assert_int_equal(image_alloc(&m, IW, IH, 8, &e), 0);
            for (int y = l.y0; y < l.y1; y++)
                for (int x = l.x0; x < l.x1; x++) m.px[y * IW + x] = 255;
            snprintf(p, sizeof p, "%s/img/case0_mask.png", root);
            if (image_save_png(p, &m, &e)) fail_msg("%s", e.msg);
            image_free(&m);
        }
        image_free(&im);
        image_free(&im8);
    }
    snprintf(p, sizeof p, "%s/manifest.csv", root);
    write_text(p, "path,patient_id,split,grade,site,mask\n"
                  "img/case0.png,A,train,2,north,img/case0_mask.png\n"
                  "img/case1.png,A,train,10,south,\n"
                  "img/case2.png,B,test,,north,\n"
                  "img/case3.png,C,,1,east,\n");
}

static void make_fixtures(void) {
    make_vindr(FX "/vindr");
    make_cbis(FX "/cbis-ddsm");
    make_inbreast(FX "/inbreast");
    make_cmmd(FX "/cmmd");
    make_rsna(FX "/rsna");
    make_embed(FX "/embed");
    make_mias(FX "/mias");
    make_manifest(FX "/manifest");
}

/* ------------------------------------------------------------------------------------------ */
/* checks */

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/versa_test_convert_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : 1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : 1;
}

static ConvertOpts opts_for(const char *root, const char *out_name, char *out_path) {
    ConvertOpts o = convert_opts_default();
    o.raw_root = root;
    snprintf(out_path, 512, "%s/%s", tmpdir, out_name);
    o.out_path = out_path;
    o.width = OUT;
    o.height = OUT;
    o.gzip = 1;
    return o;
}

static void run_ok(const char *name, const ConvertOpts *o, ConvertStats *st, Prepared *p) {
    Err e;
    if (convert_dataset(name, o, st, &e)) fail_msg("%s: %s", name, e.msg);
    print_message("%-9s %ld images (train %ld, val %ld, test %ld), %ld boxes, %ld masks, %.3f s\n", name, st->n_written,
                  st->n_split[0], st->n_split[1], st->n_split[2], st->n_boxes, st->n_masks, st->seconds);
    if (prep_open(p, o->out_path, &e)) fail_msg("%s", e.msg);
}

static long find_image(const Prepared *p, const char *id) {
    for (size_t i = 0; i < p->n; i++)
        if (!strcmp(prep_image_id(p, i), id)) return (long)i;
    fail_msg("image '%s' not in %s", id, p->path);
    return -1;
}

static int label_of(const Prepared *p, long i, const char *name) {
    int col = prep_label_col(p, name);
    assert_true(col >= 0);
    return prep_label(p, (size_t)i, col);
}

/* the prepared box of a source box under the stored transform: crop, mirror, scale */
static void expect_box(const Prepared *p, long i, Lesion l, int k, float tol) {
    const float *t = p->transform + 7 * i;
    float cw = t[2] - t[0], ch = t[3] - t[1];
    /* box_crop: into crop coordinates, clipped to the crop */
    float x0 = fminf(fmaxf(l.x0 - t[0], 0), cw), x1 = fminf(fmaxf(l.x1 - t[0], 0), cw);
    float cy0 = fminf(fmaxf(l.y0 - t[1], 0), ch), cy1 = fminf(fmaxf(l.y1 - t[1], 0), ch);
    if (t[4] != 0) {
        float a = cw - x1;
        x1 = cw - x0;
        x0 = a;
    }
    x0 *= t[5];
    x1 *= t[5];
    float y0 = cy0 * t[6], y1 = cy1 * t[6];
    const PrepBox *b = prep_sample_boxes(p, (size_t)i) + k;
    if (fabsf(b->x0 - x0) > tol || fabsf(b->x1 - x1) > tol || fabsf(b->y0 - y0) > tol || fabsf(b->y1 - y1) > tol)
        fail_msg("%s sample %ld box %d: got (%.2f %.2f %.2f %.2f), expected (%.2f %.2f %.2f %.2f)", p->path, i, k, b->x0,
                 b->y0, b->x1, b->y1, x0, y0, x1, y1);
}

/* every prepared image has its breast on the left (flip to a common side worked) */
static void check_left_side(const Prepared *p) {
    float img[OUT * OUT];
    Err e;
    for (size_t i = 0; i < p->n; i++) {
        assert_int_equal(prep_read_image_f32(p, i, img, &e), 0);
        double l = 0, r = 0;
        for (int y = 0; y < OUT; y++)
            for (int x = 0; x < OUT; x++) *(x < OUT / 2 ? &l : &r) += img[y * OUT + x];
        if (!(l > r)) fail_msg("%s sample %zu (%s): breast not on the left (%.1f vs %.1f)", p->path, i, prep_image_id(p, i), l, r);
    }
}

/* mask pixels lie inside the sample's boxes (1 px slack for nearest rounding) */
static int mask_inside_boxes(const Prepared *p, size_t i) {
    uint8_t m[OUT * OUT];
    Err e;
    assert_int_equal(prep_read_mask(p, i, m, &e), 0);
    int n = 0;
    for (int y = 0; y < OUT; y++)
        for (int x = 0; x < OUT; x++) {
            if (!m[y * OUT + x]) continue;
            n++;
            int in = 0;
            for (size_t k = 0; k < prep_n_boxes(p, i); k++) {
                const PrepBox *b = prep_sample_boxes(p, i) + k;
                in |= x + 0.5f >= b->x0 - 1 && x + 0.5f <= b->x1 + 1 && y + 0.5f >= b->y0 - 1 && y + 0.5f <= b->y1 + 1;
            }
            if (!in) fail_msg("%s sample %zu: mask pixel (%d, %d) outside every box", p->path, i, x, y);
        }
    return n;
}

static void test_vindr(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/vindr", "vindr.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("vindr", &o, &st, &p);
    assert_int_equal(p.n, 6);
    assert_string_equal(p.dataset, "vindr");
    assert_int_equal(p.n_findings, 10);
    assert_int_equal(st.n_boxes, 4);
    for (int i = 0; i < 6; i++) {
        long k = find_image(&p, VD[i].image);
        assert_string_equal(prep_patient(&p, (size_t)k), VD[i].study);
        assert_int_equal(label_of(&p, k, "birads"), VD[i].birads[8] - '0');
        assert_int_equal(label_of(&p, k, "density"), VD[i].density[8] - 'A');
        assert_int_equal(p.laterality[k], VD[i].right);
        assert_int_equal(p.view[k], !strcmp(VD[i].view, "MLO"));
        if (!strcmp(VD[i].split, "test")) assert_int_equal(p.split[k], PREP_SPLIT_TEST);
        else assert_true(p.split[k] != PREP_SPLIT_TEST);
        assert_int_equal(prep_n_boxes(&p, (size_t)k), VD[i].nles);
        assert_int_equal(p.orig_size[2 * k], IH);
        assert_int_equal(p.orig_size[2 * k + 1], IW);
    }
    long i3 = find_image(&p, VD[3].image), i0 = find_image(&p, VD[0].image);
    /* findings: Mass + Suspicious Calcification (row 1) + Architectural Distortion (row 2) */
    const uint8_t *f3 = p.findings + i3 * 10;
    assert_int_equal(f3[0] + f3[1] + f3[5], 3);
    assert_int_equal(f3[2] + f3[3] + f3[4] + f3[6] + f3[7] + f3[8] + f3[9], 0);
    assert_int_equal(prep_sample_boxes(&p, (size_t)i3)[0].label, 0);   /* first category: Mass */
    assert_int_equal(prep_sample_boxes(&p, (size_t)i3)[1].label, 5);
    /* each box keeps its row's finding_birads ("BI-RADS 4"); density has no per-box value */
    int bc = prep_label_col(&p, "birads");
    for (size_t b = 0; b < p.n_boxes; b++) assert_int_equal(p.boxes[b].values[bc], 4);
    assert_int_equal(p.boxes[0].values[prep_label_col(&p, "density")], -1);
    expect_box(&p, i0, lesion_at(0, 0), 0, 1e-3f);
    expect_box(&p, i3, lesion_at(1, 0), 0, 1e-3f);
    /* the negative xmin was clamped to 0 before the transform: the box ends at the right edge of
     * the mirrored crop or beyond (then clipped) */
    Lesion clamped = lesion_at(1, 1);
    clamped.x0 = 0;
    expect_box(&p, i3, clamped, 1, 1e-3f);
    assert_float_equal(prep_sample_boxes(&p, (size_t)i3)[1].x1, OUT, 1e-3);   /* mirrored crop edge */
    /* the image's breast is on the left after preprocessing; right images were mirrored */
    check_left_side(&p);
    for (int i = 0; i < 6; i++) assert_int_equal((int)p.transform[7 * find_image(&p, VD[i].image) + 4], VD[i].right);
    prep_close(&p);
}

static void test_vindr_bad_header(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/vindr_bad_header", "bad.h5", out);
    Err e;
    assert_int_equal(convert_vindr(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_string_equal(e.msg, FX "/vindr_bad_header/breast-level_annotations.csv: missing column 'breast_density'");
    assert_int_equal(access(out, F_OK), -1);   /* nothing written */
}

/* copy a fixture directory into tmp and replace text in one of its CSVs */
static void variant(const char *src, const char *dst, const char *file, const char *from, const char *to) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", dst, src, dst);
    assert_int_equal(system(cmd), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dst, file);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[65536], out[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = 0;
    fclose(f);
    char *hit = strstr(buf, from);
    assert_non_null(hit);
    size_t pre = (size_t)(hit - buf);
    memcpy(out, buf, pre);
    strcpy(out + pre, to);
    strcat(out, hit + strlen(from));
    f = fopen(path, "wb");
    fputs(out, f);
    fclose(f);
}

static void test_bad_values_and_missing_images(void **state) {
    (void)state;
    char root[400], out[512];
    Err e;
    snprintf(root, sizeof root, "%s/vindr_v1", tmpdir);
    variant(FX "/vindr", root, "breast-level_annotations.csv", "DENSITY D", "DENSITY E");
    ConvertOpts o = opts_for(root, "v1.h5", out);
    assert_int_equal(convert_vindr(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "breast-level_annotations.csv:6: column 'breast_density': unknown value 'DENSITY E'"));
    variant(FX "/vindr", root, "finding_annotations.csv", "'Focal Asymmetry'", "'Focal Asymetry'");
    assert_int_equal(convert_vindr(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "finding_annotations.csv:"));
    assert_non_null(strstr(e.msg, "unknown category 'Focal Asymetry'"));
    /* a missing image: fail naming the file (default), or skip and count */
    variant(FX "/vindr", root, "breast-level_annotations.csv", "", "");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm %s/images/%s/%s.dicom", root, VD[2].study, VD[2].image);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(convert_vindr(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, VD[2].image));
    assert_int_equal(access(out, F_OK), -1);
    o.on_missing = CONVERT_SKIP;
    ConvertStats st;
    assert_int_equal(convert_vindr(&o, &st, &e), 0);
    assert_int_equal(st.n_written, 5);
    assert_int_equal(st.n_skipped, 1);
    assert_non_null(strstr(st.first_skip, VD[2].image));
    /* CBIS: a pathology outside the vocabulary */
    snprintf(root, sizeof root, "%s/cbis_v1", tmpdir);
    variant(FX "/cbis-ddsm", root, "calc_case_description_train_set.csv", "BENIGN_WITHOUT_CALLBACK", "BENIGN_WITH_CALLBACK");
    o = opts_for(root, "c1.h5", out);
    assert_int_equal(convert_cbis(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "calc_case_description_train_set.csv:2: column 'pathology': unknown value"));
    /* CBIS: the calc table with the mass table's "breast_density" spelling is a header error */
    variant(FX "/cbis-ddsm", root, "calc_case_description_train_set.csv", "breast density", "breast_density");
    assert_int_equal(convert_cbis(&o, NULL, &e), 1);
    assert_non_null(strstr(e.msg, "calc_case_description_train_set.csv: missing column 'breast density'"));
}

static void test_threads_same_output(void **state) {
    (void)state;
    char o1[512], o2[512];
    ConvertOpts a = opts_for(FX "/vindr", "t1.h5", o1), b = opts_for(FX "/vindr", "t2.h5", o2);
    Err e;
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(convert_vindr(&a, NULL, &e), 0);
    omp_set_num_threads(3);
    assert_int_equal(convert_vindr(&b, NULL, &e), 0);
    omp_set_num_threads(nt);
    Prepared p, q;
    assert_int_equal(prep_open(&p, o1, &e), 0);
    assert_int_equal(prep_open(&q, o2, &e), 0);
    assert_int_equal(p.n, q.n);
    uint16_t x[OUT * OUT], y[OUT * OUT];
    for (size_t i = 0; i < p.n; i++) {
        assert_string_equal(prep_image_id(&p, i), prep_image_id(&q, i));
        assert_int_equal(prep_read_image(&p, i, x, &e), 0);
        assert_int_equal(prep_read_image(&q, i, y, &e), 0);
        assert_memory_equal(x, y, sizeof x);
        assert_int_equal(p.split[i], q.split[i]);
    }
    assert_memory_equal(p.boxes, q.boxes, p.n_boxes * sizeof(PrepBox));
    prep_close(&p);
    prep_close(&q);
}

static void test_cbis(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/cbis-ddsm", "cbis.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("cbis-ddsm", &o, &st, &p);
    assert_int_equal(p.n, 3);
    long a = find_image(&p, "Mass-Training_P_00001_LEFT_CC"), b = find_image(&p, "Calc-Training_P_00002_RIGHT_CC"),
         c = find_image(&p, "Mass-Test_P_00003_RIGHT_MLO");
    /* two masses on one image: worst pathology, max assessment, first subtlety, both boxes */
    assert_int_equal(label_of(&p, a, "pathology"), PREP_PATH_MALIGNANT);
    assert_int_equal(label_of(&p, a, "birads"), 4);
    assert_int_equal(label_of(&p, a, "density"), 2);
    assert_int_equal(label_of(&p, a, "subtlety"), 4);
    assert_int_equal(prep_n_boxes(&p, (size_t)a), 2);
    expect_box(&p, a, lesion_at(0, 0), 0, 1e-3f);   /* from the mask found beside the crop */
    expect_box(&p, a, lesion_at(0, 1), 1, 1e-3f);
    /* ... and each box its own lesion's pathology, assessment and subtlety (a crop of the benign
     * mass is benign, BI-RADS 3, subtlety 3); density has no per-box value */
    int pc = prep_label_col(&p, "pathology"), bc = prep_label_col(&p, "birads"), sc = prep_label_col(&p, "subtlety");
    const PrepBox *ba = prep_sample_boxes(&p, (size_t)a);
    assert_int_equal(ba[0].values[pc], PREP_PATH_MALIGNANT);
    assert_int_equal(ba[1].values[pc], PREP_PATH_BENIGN);
    assert_int_equal(ba[0].values[bc], 4);
    assert_int_equal(ba[1].values[bc], 3);
    assert_int_equal(ba[0].values[sc], 4);   /* subtlety 5 -> class index 4 */
    assert_int_equal(ba[1].values[sc], 2);
    assert_int_equal(ba[0].values[prep_label_col(&p, "density")], -1);
    assert_int_equal(prep_sample_boxes(&p, (size_t)b)[0].values[pc], PREP_PATH_BENIGN);
    assert_int_equal(p.findings[a * 2 + 0], 1);
    assert_int_equal(p.findings[a * 2 + 1], 0);
    /* calc: BENIGN_WITHOUT_CALLBACK -> benign; "breast density" with a space */
    assert_int_equal(label_of(&p, b, "pathology"), PREP_PATH_BENIGN);
    assert_int_equal(label_of(&p, b, "density"), 0);
    assert_int_equal(p.findings[b * 2 + 1], 1);
    expect_box(&p, b, lesion_at(1, 0), 0, 1e-3f);
    /* NBIA layout resolved by subject folder; test split kept */
    assert_int_equal(p.split[c], PREP_SPLIT_TEST);
    assert_true(p.split[a] != PREP_SPLIT_TEST && p.split[b] != PREP_SPLIT_TEST);
    expect_box(&p, c, lesion_at(1, 1), 0, 1e-3f);
    for (size_t i = 0; i < p.n; i++) {
        assert_int_equal(p.mask_present[i], 1);
        assert_true(mask_inside_boxes(&p, i) > 0);
    }
    assert_string_equal(prep_patient(&p, (size_t)c), "P_00003");
    check_left_side(&p);
    prep_close(&p);
}

/* mean of row y of sample i (OUT x OUT, floats in [0, 1]) */
static float row_mean(const Prepared *p, size_t i, int y) {
    float px[OUT * OUT];
    Err e;
    if (prep_read_image_f32(p, i, px, &e)) fail_msg("%s", e.msg);
    float m = 0;
    for (int x = 0; x < OUT; x++) m += px[y * OUT + x];
    return m / OUT;
}

/* cbis-roi: one sample per abnormality from its cropped image, found by size beside the mask */
static void test_cbis_roi(void **state) {
    (void)state;
    char out[512], root[400];
    Err e;
    ConvertOpts o = opts_for(FX "/cbis-ddsm", "cbis_roi.h5", out);
    /* two of the fixture's four ROI folders hold only the mask: by default that is an error
     * naming the row's crop path, and no file is left */
    assert_int_equal(convert_dataset("cbis-ddsm-roi", &o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "Mass-Training_P_00001_LEFT_CC_2"));
    assert_non_null(strstr(e.msg, "no cropped image there"));
    assert_int_equal(access(out, F_OK), -1);
    o.on_missing = CONVERT_SKIP;
    ConvertStats st;
    Prepared p;
    run_ok("cbis-ddsm-roi", &o, &st, &p);
    assert_int_equal(p.n, 2);
    assert_int_equal(st.n_skipped, 2);
    assert_non_null(strstr(st.first_skip, "no cropped image there"));
    long a = find_image(&p, "Mass-Training_P_00001_LEFT_CC_1"), c = find_image(&p, "Mass-Test_P_00003_RIGHT_MLO_1");
    /* each crop carries its own row's values */
    assert_int_equal(label_of(&p, a, "pathology"), PREP_PATH_MALIGNANT);
    assert_int_equal(label_of(&p, a, "birads"), 4);
    assert_int_equal(label_of(&p, a, "subtlety"), 4);
    assert_int_equal(label_of(&p, a, "density"), 2);
    assert_int_equal(p.findings[a * 2 + 0], 1);
    assert_int_equal(label_of(&p, c, "pathology"), PREP_PATH_BENIGN);
    assert_int_equal(label_of(&p, c, "subtlety"), 1);
    assert_int_equal(p.split[c], PREP_SPLIT_TEST);
    assert_true(p.split[a] != PREP_SPLIT_TEST);
    assert_string_equal(prep_patient(&p, (size_t)c), "P_00003");
    for (size_t i = 0; i < p.n; i++) assert_int_equal(prep_n_boxes(&p, i), 0);
    /* the 12 x 10 crop (a ramp rising row by row), not the 200-px mask: scaled to the width and
     * padded below, never stretched */
    float r1 = row_mean(&p, (size_t)a, 1), r20 = row_mean(&p, (size_t)a, 20), last = row_mean(&p, (size_t)a, OUT - 1);
    assert_true(r1 > 0.0f && r20 > r1);
    assert_true(last == 0.0f);
    float want = r20;
    prep_close(&p);
    /* the crop column naming the mask instead (the release swaps them): the crop is still found */
    snprintf(root, sizeof root, "%s/cbis_roi_swap", tmpdir);
    variant(FX "/cbis-ddsm", root, "mass_case_description_train_set.csv", "222.1/000000.dcm,", "222.1/000001.dcm,");
    o = opts_for(root, "cbis_roi_swap.h5", out);
    o.on_missing = CONVERT_SKIP;
    run_ok("cbis-ddsm-roi", &o, &st, &p);
    assert_int_equal(p.n, 2);
    assert_true(row_mean(&p, (size_t)find_image(&p, "Mass-Training_P_00001_LEFT_CC_1"), 20) == want);
    prep_close(&p);
}

static void test_inbreast(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/inbreast", "inbreast.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("inbreast", &o, &st, &p);
    assert_int_equal(p.n, 3);   /* the footer row is skipped */
    long a = find_image(&p, "22678622"), b = find_image(&p, "22678646"), c = find_image(&p, "53586896");
    assert_string_equal(prep_patient(&p, (size_t)a), "a1b2c3d4e5f60718");
    assert_string_equal(prep_patient(&p, (size_t)c), "0fedcba987654321");
    assert_int_equal(p.split[a], p.split[b]);   /* same patient, same split */
    assert_int_equal(label_of(&p, a, "birads"), 4);
    assert_int_equal(label_of(&p, a, "birads_sub"), 3);   /* "4a" */
    assert_int_equal(label_of(&p, a, "density"), 1);
    assert_int_equal(label_of(&p, c, "density"), -1);     /* blank ACR */
    assert_int_equal(label_of(&p, c, "birads"), 2);
    assert_int_equal(p.view[c], PREP_VIEW_MLO);
    /* findings mass, calcification (point), cluster; the unnamed ROI ignored; polygon boxes only */
    const uint8_t *f = p.findings + a * 6;
    assert_int_equal(f[0] + f[1] + f[2], 3);
    assert_int_equal(f[3] + f[4] + f[5], 0);
    assert_int_equal(prep_n_boxes(&p, (size_t)a), 2);
    Lesion m = lesion_at(0, 0);
    Lesion poly = {m.x0, m.y0, m.x1, m.y1};   /* the diamond spans the lesion's extent */
    poly.y0 = m.y0;
    expect_box(&p, a, poly, 0, 0.6f);
    assert_int_equal(prep_sample_boxes(&p, (size_t)a)[1].label, 2);
    /* the mask = the mass polygon only; every image annotated */
    int px = mask_inside_boxes(&p, (size_t)a);
    assert_true(px > 0);
    uint8_t mk[OUT * OUT];
    Err e;
    assert_int_equal(prep_read_mask(&p, (size_t)b, mk, &e), 0);
    for (int i = 0; i < OUT * OUT; i++) assert_int_equal(mk[i], 0);
    assert_int_equal(p.mask_present[b], 1);
    check_left_side(&p);
    prep_close(&p);
}

static void test_cmmd(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/cmmd", "cmmd.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("cmmd", &o, &st, &p);
    assert_int_equal(p.n, 6);
    for (size_t i = 0; i < p.n; i++) {
        const char *id = prep_image_id(&p, i);
        int d2 = !strncmp(id, "D2-0001", 7);
        int k = id[strlen(id) - 5] - '1';   /* 1-<k+1>.dcm */
        int right = d2 && k >= 2;
        assert_int_equal(p.laterality[i], right);
        assert_int_equal(p.view[i], k % 2);   /* ViewPosition, or PatientOrientation's F */
        int path = label_of(&p, (long)i, "pathology");
        if (!d2) {
            assert_int_equal(path, PREP_PATH_BENIGN);
            assert_int_equal(label_of(&p, (long)i, "abnormality"), 1);
            assert_int_equal(label_of(&p, (long)i, "subtype"), -1);
        } else if (right) {
            assert_int_equal(path, PREP_PATH_MALIGNANT);
            assert_int_equal(label_of(&p, (long)i, "abnormality"), 0);
            assert_int_equal(label_of(&p, (long)i, "subtype"), 0);
        } else {
            assert_int_equal(path, PREP_PATH_NORMAL);   /* no row: normal contralateral breast */
        }
    }
    check_left_side(&p);
    prep_close(&p);
    /* the xlsx reader on its own: header and typed cells */
    Csv c;
    Err e;
    assert_int_equal(xlsx_read(FX "/cmmd/CMMD_clinicaldata_revision.xlsx", &c, &e), 0);
    assert_int_equal(c.ncols, 7);
    assert_int_equal(c.nrows, 2);
    assert_string_equal(csv_get(&c, 1, csv_col(&c, "subtype")), "Luminal A");
    assert_string_equal(csv_get(&c, 0, csv_col(&c, "Age")), "44");
    assert_string_equal(csv_get(&c, 0, csv_col(&c, "subtype")), "");
    csv_free(&c);
}

static void test_rsna(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/rsna", "rsna.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("rsna", &o, &st, &p);
    assert_int_equal(p.n, 4);
    long a = find_image(&p, "462822612"), b = find_image(&p, "1459541791"), c = find_image(&p, "220375232"),
         d = find_image(&p, "270344397");
    assert_int_equal(label_of(&p, a, "cancer"), 0);
    assert_int_equal(label_of(&p, b, "cancer"), 1);
    assert_int_equal(label_of(&p, b, "invasive"), 1);
    assert_int_equal(label_of(&p, a, "birads"), -1);
    assert_int_equal(label_of(&p, b, "birads"), 0);
    assert_int_equal(label_of(&p, d, "birads"), 2);
    assert_int_equal(label_of(&p, a, "density"), -1);
    assert_int_equal(label_of(&p, d, "density"), 3);
    assert_int_equal(label_of(&p, c, "difficult_negative_case"), 1);
    assert_int_equal(label_of(&p, d, "implant"), 1);
    assert_int_equal(p.view[c], PREP_VIEW_OTHER);   /* ML */
    assert_int_equal(p.split[a], p.split[b]);
    assert_int_equal(p.split[c], p.split[d]);
    check_left_side(&p);
    prep_close(&p);
}

static void test_embed(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/embed", "embed.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("embed", &o, &st, &p);
    assert_int_equal(p.n, 3);   /* the C-view row is left out */
    long a = find_image(&p, "1.2.840.1.1.dcm"), b = find_image(&p, "1.2.840.1.2.dcm"), c = find_image(&p, "1.2.840.2.1.dcm");
    /* left: rows S (BI-RADS 4, severity 0) and B (2, severity 4) -> birads 4, malignant */
    assert_int_equal(label_of(&p, a, "birads"), 4);
    assert_int_equal(label_of(&p, a, "pathology"), PREP_PATH_MALIGNANT);
    assert_int_equal(label_of(&p, a, "density"), 2);
    /* right: N (1), no pathology */
    assert_int_equal(label_of(&p, b, "birads"), 1);
    assert_int_equal(label_of(&p, b, "pathology"), -1);
    /* exam 2: side B applies to the right image; tissueden 5 (male) -> missing; A -> BI-RADS 0 */
    assert_int_equal(label_of(&p, c, "density"), -1);
    assert_int_equal(label_of(&p, c, "birads"), 0);
    /* ROI_coords [[ymin, xmin, ymax, xmax]] = [[16, 12, 23, 21]] -> x 12..21, y 16..23 */
    assert_int_equal(prep_n_boxes(&p, (size_t)a), 1);
    expect_box(&p, a, (Lesion){12, 16, 21, 23}, 0, 1e-3f);
    assert_int_equal(prep_n_boxes(&p, (size_t)c), 0);
    assert_string_equal(prep_patient(&p, (size_t)a), "11111111");
    check_left_side(&p);
    prep_close(&p);
}

static void test_mias(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(FX "/mias", "mias.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("mias", &o, &st, &p);
    assert_int_equal(p.n, 4);
    long m1 = find_image(&p, "mdb001"), m2 = find_image(&p, "mdb002"), m3 = find_image(&p, "mdb003"),
         m4 = find_image(&p, "mdb004");
    assert_int_equal(p.laterality[m1], PREP_LAT_R);   /* odd = right */
    assert_int_equal(p.laterality[m2], PREP_LAT_L);
    assert_string_equal(prep_patient(&p, (size_t)m1), prep_patient(&p, (size_t)m2));
    assert_int_equal(p.split[m1], p.split[m2]);
    assert_int_equal(label_of(&p, m1, "tissue"), 1);
    assert_int_equal(label_of(&p, m1, "pathology"), PREP_PATH_BENIGN);
    assert_int_equal(label_of(&p, m2, "pathology"), PREP_PATH_NORMAL);
    assert_int_equal(label_of(&p, m3, "pathology"), PREP_PATH_MALIGNANT);
    assert_int_equal(label_of(&p, m4, "tissue"), 0);
    /* mdb003: CALC + SPIC lines, both located; mdb004: no coordinates, finding only */
    assert_int_equal(p.findings[m3 * 6 + 0] + p.findings[m3 * 6 + 2], 2);
    assert_int_equal(prep_n_boxes(&p, (size_t)m3), 2);
    assert_int_equal(prep_n_boxes(&p, (size_t)m4), 0);
    /* the image is malignant (worst line); each box keeps its own line's severity */
    int pc = prep_label_col(&p, "pathology");
    assert_int_equal(prep_sample_boxes(&p, (size_t)m3)[0].values[pc], PREP_PATH_MALIGNANT);
    assert_int_equal(prep_sample_boxes(&p, (size_t)m3)[1].values[pc], PREP_PATH_BENIGN);
    assert_int_equal(p.findings[m4 * 6 + 0], 1);
    /* mdb001: centre (40, 40) from the bottom-left of a 64-row image = row 23; radius 5 */
    Lesion c1 = {40 - 5, 23 - 5, 40 + 6, 23 + 6};
    const float *t = p.transform + 7 * m1;
    float cw = t[2] - t[0];
    float bx0 = c1.x0 + 0.5f - t[0], bx1 = c1.x1 - 0.5f - t[0];
    float e0 = (cw - bx1) * t[5], e1 = (cw - bx0) * t[5];   /* mirrored: a right breast */
    const PrepBox *b = prep_sample_boxes(&p, (size_t)m1);
    assert_float_equal(b->x0, e0, 1e-3);
    assert_float_equal(b->x1, e1, 1e-3);
    assert_float_equal(b->y0, (c1.y0 + 0.5f - t[1]) * t[6], 1e-3);
    /* the disc mask sits inside its box and covers the bright disc */
    assert_true(mask_inside_boxes(&p, (size_t)m1) > 0);
    check_left_side(&p);
    prep_close(&p);
}

static void test_manifest(void **state) {
    (void)state;
    char out[512];
    ConvertOpts o = opts_for(NULL, "manifest.h5", out);
    o.manifest = FX "/manifest/manifest.csv";
    ConvertStats st;
    Prepared p;
    run_ok("manifest", &o, &st, &p);
    assert_int_equal(p.n, 4);
    /* labels: every non-reserved column; "grade" integers in numeric order, "site" as strings */
    assert_int_equal(p.n_labels, 2);
    assert_string_equal(p.label_names[0], "grade");
    assert_int_equal(p.n_classes[0], 3);
    assert_string_equal(p.class_names[0][0], "1");
    assert_string_equal(p.class_names[0][2], "10");
    assert_string_equal(p.class_names[1][0], "east");
    long a = find_image(&p, "img/case0.png"), b = find_image(&p, "img/case1.png"), c = find_image(&p, "img/case2.png");
    assert_int_equal(label_of(&p, a, "grade"), 1);
    assert_int_equal(label_of(&p, b, "grade"), 2);
    assert_int_equal(label_of(&p, c, "grade"), -1);
    assert_int_equal(p.split[c], PREP_SPLIT_TEST);
    assert_int_equal(p.split[a], p.split[b]);
    assert_true(p.split[a] != PREP_SPLIT_TEST);
    assert_int_equal(p.mask_present[a], 1);
    assert_int_equal(p.mask_present[b], 0);
    assert_int_equal(st.n_masks, 1);
    /* only named label columns; an absent one is an error naming file and column */
    const char *only[] = {"site", NULL};
    prep_close(&p);
    o.manifest_labels = only;
    Err e;
    assert_int_equal(convert_manifest(&o, NULL, &e), 0);
    assert_int_equal(prep_open(&p, out, &e), 0);
    assert_int_equal(p.n_labels, 1);
    prep_close(&p);
    const char *bad[] = {"grades", NULL};
    o.manifest_labels = bad;
    assert_int_equal(convert_manifest(&o, NULL, &e), 1);
    assert_string_equal(e.msg, FX "/manifest/manifest.csv: missing column 'grades'");
}

/* A mask names one file.  The manifest's mask is that file or an error: never a search of its
 * folder (fuzz_manifest: a mask of "/" walked and decoded the whole file system, a CI timeout;
 * a non-binary mask was silently replaced by a binary sibling).  CBIS-DDSM's ROI-folder search
 * stays inside the raw root. */
static void test_mask_paths_are_exact(void **state) {
    (void)state;
    char root[400], out[512], csv[600];
    Err e;
    snprintf(root, sizeof root, "%s/manifest_m1", tmpdir);
    snprintf(csv, sizeof csv, "%s/manifest.csv", root);
    ConvertOpts o = opts_for(NULL, "m1.h5", out);
    o.manifest = csv;
    static const struct { const char *mask, *want; } cases[] = {
        {"/", "/: a folder, not a mask image"},
        {"img", "/img: a folder, not a mask image"},
        {"img/case1.png", "/img/case1.png: not a binary mask of the image size"},
        {"img/nowhere.png", "/img/nowhere.png: no such file"},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        variant(FX "/manifest", root, "manifest.csv", "img/case0_mask.png", cases[k].mask);
        assert_int_equal(convert_manifest(&o, NULL, &e), 1);
        print_message("  %s\n", e.msg);
        assert_non_null(strstr(e.msg, cases[k].want));
        assert_int_equal(access(out, F_OK), -1);
    }
    /* a CBIS ROI path that climbs out of the raw root: refused, not searched */
    snprintf(root, sizeof root, "%s/cbis_m1", tmpdir);
    variant(FX "/cbis-ddsm", root, "calc_case_description_train_set.csv", "000001.dcm,Calc-Training",
            "000001.dcm,../../Calc-Training");
    o = opts_for(root, "c_m1.h5", out);
    assert_int_equal(convert_cbis(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "is not inside the raw root"));
    /* a subject folder holding far more images than one ROI series: not decoded one by one */
    variant(FX "/cbis-ddsm", root, "calc_case_description_train_set.csv", "222.4/000000.dcm\n", "222.9/000000.dcm\n");
    for (int k = 0; k < 65; k++) {
        char f[500];
        snprintf(f, sizeof f, "%s/Calc-Training_P_00002_RIGHT_CC_1/extra/x%02d.png", root, k);
        mkparent(f);
        write_text(f, "");
    }
    assert_int_equal(convert_cbis(&o, NULL, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "more than 64 images under"));
}

/* the synthetic generator's VinDr- and CBIS-style output goes through the real converters */
static void test_synth_datasets(void **state) {
    (void)state;
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = 3;
    sc.width = 104;
    sc.height = 128;
    sc.quiet = 1;
    char raw[400], root[420], out[512];
    snprintf(raw, sizeof raw, "%s/synth", tmpdir);
    Err e;
    if (synth_write_dataset(&sc, raw, SYNTH_FMT_VINDR | SYNTH_FMT_CBIS, &e)) fail_msg("%s", e.msg);
    snprintf(root, sizeof root, "%s/vindr-mammo", raw);
    ConvertOpts o = opts_for(root, "synth_vindr.h5", out);
    ConvertStats st;
    Prepared p;
    run_ok("vindr", &o, &st, &p);
    assert_int_equal(p.n, 12);
    /* one box per finding row with coordinates */
    Csv f;
    char fp[500];
    snprintf(fp, sizeof fp, "%s/finding_annotations.csv", root);
    assert_int_equal(csv_read(fp, &f, &e), 0);
    long rows_with_box = 0;
    for (size_t i = 0; i < f.nrows; i++) rows_with_box += !csv_is_empty(&f, i, csv_col(&f, "xmin"));
    csv_free(&f);
    assert_int_equal(st.n_boxes, rows_with_box);
    /* a finding's BI-RADS never exceeds its breast's */
    int vb = prep_label_col(&p, "birads");
    for (size_t i = 0; i < p.n; i++)
        for (size_t k = 0; k < prep_n_boxes(&p, i); k++) {
            int32_t v = prep_sample_boxes(&p, i)[k].values[vb];
            assert_true(v >= 2 && v <= prep_label(&p, i, vb));
        }
    check_left_side(&p);
    prep_close(&p);
    snprintf(root, sizeof root, "%s/cbis-ddsm", raw);
    o = opts_for(root, "synth_cbis.h5", out);
    run_ok("cbis-ddsm", &o, &st, &p);
    assert_true(p.n > 0);
    /* every lesion's own pathology is benign or malignant, and an image's is the worst of them */
    int pc = prep_label_col(&p, "pathology");
    size_t mixed = 0;
    for (size_t i = 0; i < p.n; i++) {
        assert_true(prep_n_boxes(&p, i) > 0);
        mask_inside_boxes(&p, i);
        const PrepBox *bx = prep_sample_boxes(&p, i);
        int32_t worst = -1, best = 3;
        for (size_t k = 0; k < prep_n_boxes(&p, i); k++) {
            int32_t v = bx[k].values[pc];
            assert_true(v == PREP_PATH_BENIGN || v == PREP_PATH_MALIGNANT);
            worst = v > worst ? v : worst;
            best = v < best ? v : best;
        }
        assert_true(worst <= prep_label(&p, i, pc));
        mixed += worst != best;
    }
    print_message("  synthetic CBIS: %zu of %zu images hold a benign and a malignant lesion\n", mixed, p.n);
    prep_close(&p);
    /* ... and as lesion crops: one per CSV row, each with the row's pathology */
    size_t rows = 0, malignant = 0;
    static const char *const tabs[4] = {"mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
                                        "calc_case_description_train_set.csv", "calc_case_description_test_set.csv"};
    for (int t = 0; t < 4; t++) {
        snprintf(fp, sizeof fp, "%s/%s", root, tabs[t]);
        assert_int_equal(csv_read(fp, &f, &e), 0);
        rows += f.nrows;
        for (size_t i = 0; i < f.nrows; i++) malignant += !strcmp(csv_get(&f, i, csv_col(&f, "pathology")), "MALIGNANT");
        csv_free(&f);
    }
    o = opts_for(root, "synth_cbis_roi.h5", out);
    run_ok("cbis-ddsm-roi", &o, &st, &p);
    assert_int_equal(p.n, rows);
    size_t got = 0;
    for (size_t i = 0; i < p.n; i++) got += prep_label(&p, i, pc) == PREP_PATH_MALIGNANT;
    assert_int_equal(got, malignant);
    prep_close(&p);
}

static void test_parsers(void **state) {
    (void)state;
    assert_int_equal(parse_density("DENSITY C"), 2);
    assert_int_equal(parse_density("b"), 1);
    assert_int_equal(parse_density("4"), 3);
    assert_int_equal(parse_density(" "), -1);
    assert_int_equal(parse_density("E"), -2);
    assert_int_equal(parse_birads("BI-RADS 5"), 5);
    assert_int_equal(parse_birads("4c"), 4);
    assert_int_equal(parse_birads("BIRAD 2"), 2);
    assert_int_equal(parse_birads("2.0"), 2);
    assert_int_equal(parse_birads("nan"), -1);
    assert_int_equal(parse_birads("7"), -2);
    assert_int_equal(parse_view("MLO"), PREP_VIEW_MLO);
    assert_int_equal(parse_view("XCCL"), PREP_VIEW_OTHER);
    assert_int_equal(parse_laterality("RIGHT"), PREP_LAT_R);
    assert_int_equal(parse_laterality("B"), -2);
    assert_int_equal(prep_split_parse("training"), PREP_SPLIT_TRAIN);
    assert_int_equal(prep_split_parse("Eval"), PREP_SPLIT_VAL);
    Err e;
    ConvertOpts o = convert_opts_default();
    assert_int_equal(convert_dataset("ddsm", &o, NULL, &e), 1);
    assert_non_null(strstr(e.msg, "known: vindr"));
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--make-fixtures")) {
        make_fixtures();
        printf("fixtures written under %s\n", FX);
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parsers),
        cmocka_unit_test(test_vindr),
        cmocka_unit_test(test_vindr_bad_header),
        cmocka_unit_test(test_bad_values_and_missing_images),
        cmocka_unit_test(test_threads_same_output),
        cmocka_unit_test(test_cbis),
        cmocka_unit_test(test_cbis_roi),
        cmocka_unit_test(test_inbreast),
        cmocka_unit_test(test_cmmd),
        cmocka_unit_test(test_rsna),
        cmocka_unit_test(test_embed),
        cmocka_unit_test(test_mias),
        cmocka_unit_test(test_manifest),
        cmocka_unit_test(test_mask_paths_are_exact),
        cmocka_unit_test(test_synth_datasets),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
