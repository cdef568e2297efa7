build/obj/engine/tensor.o: engine/tensor.c engine/engine.h
engine/engine.h:
