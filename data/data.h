/*
 * data.h — everything between files on disk and a batch tensor: image and DICOM I/O,
 * preprocessing, the synthetic mammogram generator, dataset converters, prepared HDF5 datasets,
 * augmentation and loaders.  Knows nothing of models.  One public header; each area keeps its
 * declarations in its own sub-header, included here.
 */
#ifndef VERSA_DATA_H
#define VERSA_DATA_H

#include "engine/engine.h"
#include "data/image.h"      /* Image (8/16-bit gray), PNG/JPEG/PGM load/save, preprocessing */
#include "data/canvas.h"     /* drawing on 8-bit RGB images (plots, contact sheets), PNG save */
#include "data/dicom.h"      /* DICOM read/write */
#include "data/csv.h"        /* CSV reading with header validation */
#include "data/synth.h"      /* synthetic mammograms and their dataset writers */
#include "data/prepared.h"   /* converters and the prepared-HDF5 dataset format */
#include "data/augment.h"    /* multi-crop, jitter, blur, solarize, CLAHE, iBOT masks */
#include "data/loader.h"     /* threaded, sharded, resumable loader */

#endif
