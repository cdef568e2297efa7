build/obj/engine/rng.o: engine/rng.c engine/engine.h
engine/engine.h:
