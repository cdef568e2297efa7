build/obj/cli/versa.o: cli/versa.c cli/cli.h engine/engine.h
cli/cli.h:
engine/engine.h:
