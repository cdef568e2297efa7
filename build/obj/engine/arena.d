build/obj/engine/arena.o: engine/arena.c engine/engine.h
engine/engine.h:
