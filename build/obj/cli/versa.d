build/obj/cli/versa.o: cli/versa.c
