build/tests/engine/test_tensor: tests/engine/test_tensor.c \
 tests/common/testutil.h engine/engine.h
tests/common/testutil.h:
engine/engine.h:
