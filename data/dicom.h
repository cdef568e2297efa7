/*
 * data/dicom.h — the project's own small DICOM reader and writer (C, no C++ dependency).
 *
 * Reader: Part-10 files (128-byte preamble + "DICM"; files without preamble are tolerated),
 * file meta group in explicit VR LE, dataset in explicit VR LE (1.2.840.10008.1.2.1), implicit
 * VR LE (1.2.840.10008.1.2) or deflated explicit VR LE (1.2.840.10008.1.2.1.99, zlib).
 * Sequences and items of defined and undefined length are skipped (except the first item of a
 * VOI LUT Sequence, which is read).  Native pixel data 1..16 bits stored in 8 or 16 bits
 * allocated, signed or unsigned; encapsulated JPEG 2000 (1.2.840.10008.1.2.4.90 / .91) decoded
 * through libopenjp2.  Any other encapsulated syntax (JPEG baseline/lossless, JPEG-LS, RLE, ...)
 * is refused with an error naming the UID and its name, e.g.
 *   "x.dcm: unsupported transfer syntax 1.2.840.10008.1.2.5 (RLE Lossless); convert it first
 *    with `gdcmconv --raw`"
 * Every length read from a file is checked against the bytes left and sane maxima before
 * anything is allocated; corrupt, truncated or hostile files give an Err naming the file, never
 * an out-of-bounds read.  Only the first frame of a multi-frame image is read.
 *
 * Rendering (DICOM PS3.3 C.11): stored value -> Modality LUT (Rescale Slope/Intercept) -> VOI
 * (Window Center/Width with LINEAR, LINEAR_EXACT or SIGMOID, or the VOI LUT Sequence) ->
 * MONOCHROME1 / PresentationLUTShape INVERSE inverted -> output range.
 *
 * Writer: explicit VR LE, uncompressed, MONOCHROME1 or MONOCHROME2, 8/16 bits allocated, with
 * the identifying tags, laterality/view, windowing and rescale.  dicom_read gives back exactly
 * the written pixels and tags; dcmdump / pydicom read the files.
 */
#ifndef VERSA_DATA_DICOM_H
#define VERSA_DATA_DICOM_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"
#include "data/image.h"

#define DICOM_UID_LEN 65   /* 64 characters + NUL */

typedef enum VoiFunction {
    VOI_LINEAR = 0,        /* PS3.3 C.11.2.1.2.1 (the default when the tag is absent) */
    VOI_LINEAR_EXACT,      /* C.11.2.1.3.2 */
    VOI_SIGMOID,           /* C.11.2.1.3.1 */
} VoiFunction;

typedef struct DicomInfo {
    /* identity */
    char transfer_syntax[DICOM_UID_LEN];   /* (0002,0010) */
    char sop_class_uid[DICOM_UID_LEN];     /* (0008,0016) */
    char sop_instance_uid[DICOM_UID_LEN];  /* (0008,0018) */
    char study_uid[DICOM_UID_LEN];         /* (0020,000D) StudyInstanceUID */
    char series_uid[DICOM_UID_LEN];        /* (0020,000E) SeriesInstanceUID */
    char patient_id[65];                   /* (0010,0020) */
    char modality[17];                     /* (0008,0060) "MG" */
    char manufacturer[65];                 /* (0008,0070) */
    char series_description[65];           /* (0008,103E) (CBIS-DDSM: "full mammogram images") */
    char presentation_intent[17];          /* (0008,0068) "FOR PRESENTATION" / "FOR PROCESSING" */
    /* view */
    char laterality;                       /* 'L', 'R' or 0: (0020,0062) ImageLaterality, else
                                              (0020,0060) Laterality */
    char view[17];                         /* (0018,5101) ViewPosition, e.g. "CC", "MLO" */
    char patient_orientation[17];          /* (0020,0020), e.g. "A\R" */
    float pixel_spacing[2];                /* mm (row, col): (0028,0030), else (0018,1164); 0 if absent */
    /* pixel module */
    int rows, cols;                        /* (0028,0010), (0028,0011) */
    int samples_per_pixel;                 /* (0028,0002); must be 1 */
    int number_of_frames;                  /* (0028,0008); 1 when absent */
    char photometric[17];                  /* (0028,0004) "MONOCHROME1" / "MONOCHROME2" */
    int bits_allocated;                    /* (0028,0100) 8 or 16 */
    int bits_stored;                       /* (0028,0101) 1..16 */
    int high_bit;                          /* (0028,0102) */
    int pixel_representation;              /* (0028,0103) 0 unsigned, 1 two's complement */
    /* modality LUT */
    double rescale_slope, rescale_intercept;   /* (0028,1053), (0028,1052); 1 and 0 when absent */
    /* VOI */
    int has_window;
    double window_center, window_width;    /* (0028,1050), (0028,1051): first value */
    VoiFunction voi_function;              /* (0028,1056) */
    int has_voi_lut;                       /* VOI LUT Sequence (0028,3010), first item */
    int voi_lut_n, voi_lut_first, voi_lut_bits;   /* LUT Descriptor */
    uint16_t *voi_lut;                     /* voi_lut_n entries (malloc'd, freed by dicom_free) */
    int presentation_lut_inverse;          /* (2050,0020) PresentationLUTShape == "INVERSE" */
    /* padding */
    int has_padding, has_padding_limit;
    int32_t padding_value, padding_limit;  /* (0028,0120), (0028,0121) */
} DicomInfo;

typedef struct Dicom {
    DicomInfo info;
    int32_t *pixels;   /* (rows, cols) stored values of frame 0: masked to BitsStored and
                          sign-extended when signed; NULL after dicom_read_header */
} Dicom;

/* Defaults for a writer: MONOCHROME2, 16 bits allocated / 12 stored, slope 1, MG, explicit VR
 * LE, SOP class Digital Mammography X-Ray Image - For Presentation, no window. */
void dicom_info_init(DicomInfo *info);

/* Read a file: header and the pixels of the first frame. */
int dicom_read(const char *path, Dicom *d, Err *e);
/* Header only (stops at Pixel Data; no pixel decoding). d->pixels stays NULL. */
int dicom_read_header(const char *path, Dicom *d, Err *e);
/* From memory (fuzzing, tests); `name` is used in messages. */
int dicom_read_mem(const uint8_t *buf, size_t n, const char *name, Dicom *d, int header_only, Err *e);
void dicom_free(Dicom *d);

/* 1 if the buffer starts like a DICOM file (preamble + "DICM", or a plausible group-0002/0008
 * element at offset 0). */
int dicom_sniff(const uint8_t *buf, size_t n);

/* The name of a transfer syntax UID ("JPEG 2000 Image Compression (Lossless Only)", ...) or
 * "unknown transfer syntax". */
const char *dicom_transfer_syntax_name(const char *uid);

typedef enum DicomWindowMode {
    DICOM_WINDOW_AUTO = 0,   /* VOI LUT Sequence, else Window Center/Width, else min-max */
    DICOM_WINDOW_MINMAX,     /* ignore VOI tags: min-max of the modality values (the recipe's
                                stage-1 script) */
    DICOM_WINDOW_FULL,       /* ignore VOI tags: the full range of BitsStored after rescale */
} DicomWindowMode;

typedef struct DicomRenderOpts {
    DicomWindowMode window;
    int no_invert;           /* 1: keep MONOCHROME1 as stored (default 0: inverted) */
    int zero_padding;        /* 1: PixelPaddingValue (and range) pixels -> 0 after inversion */
    int out_bits;            /* 8 or 16 (default 16 when 0) */
} DicomRenderOpts;

/* Value of one modality value x through the VOI function into [0, 1] (before inversion).
 * Exposed for tests: hand-computed values per PS3.3 C.11.2.1.2. */
double dicom_voi(double x, double center, double width, VoiFunction f);

/* Render the pixels into a gray Image of o->out_bits bits (MONOCHROME2 sense: bright = dense).
 * opts may be NULL for the defaults. */
int dicom_render(const Dicom *d, const DicomRenderOpts *o, Image *out, Err *e);
/* Same into floats in [0, 1]: out holds rows*cols floats. */
int dicom_render_f32(const Dicom *d, const DicomRenderOpts *o, float *out, Err *e);

/* Convenience: read + render (+ header copy when info != NULL; info->voi_lut is then NULL). */
int dicom_load_image(const char *path, const DicomRenderOpts *o, Image *out, DicomInfo *info, Err *e);

/* Stored pixels of a read file as an Image (no VOI, no inversion): unsigned data only, bits =
 * BitsStored.  This is the exact inverse of dicom_write. */
int dicom_stored_image(const Dicom *d, Image *out, Err *e);

/* Write `im` (its values are the stored values; bits_stored = info->bits_stored, which must be
 * >= the largest value's bit length and <= 16; bits_allocated is 8 when bits_stored <= 8 else 16)
 * with the tags in info.  Written tags: meta group, SOPClass/Instance, Study/Series UIDs,
 * Modality, Manufacturer, SeriesDescription, PresentationIntentType, PatientID, ViewPosition,
 * ImageLaterality + Laterality, PatientOrientation, pixel module, PixelSpacing, rescale, window
 * (+ VOILUTFunction), PixelPaddingValue, PixelData.  Empty UIDs are generated from the patient id
 * and instance content (deterministic). */
int dicom_write(const char *path, const DicomInfo *info, const Image *im, Err *e);
/* Same into a malloc'd buffer. */
int dicom_write_mem(const DicomInfo *info, const Image *im, uint8_t **out, size_t *n, Err *e);

/* A deterministic UID: root NULL -> "2.25.<decimal of the 128-bit value (a << 64 | b)>" (the
 * UUID-derived form of PS3.5 B.2); else "<root>.<a>.<b>", truncated to 64 characters. */
void dicom_make_uid(char out[DICOM_UID_LEN], const char *root, uint64_t a, uint64_t b);

#endif
