/* e2e.h — fixtures shared by the whole-program tests (tests/e2e): a tiny synthetic VinDr-style
 * dataset, written with the real generator and converted with the real converter. */
#ifndef VERSA_TEST_E2E_H
#define VERSA_TEST_E2E_H

#include <stddef.h>

/* Synthesizes `n_patients` four-view exams (96 x 120 px, generator defaults, quiet) in the
 * VinDr-Mammo layout under DIR/raw and prepares them at size x size into DIR/vindr.h5, whose path
 * is written to `prepared`.  Fails the current cmocka test with the generator's or converter's
 * one-line error. */
void e2e_synth_vindr(const char *dir, int n_patients, int size, char *prepared, size_t prepared_len);

#endif
