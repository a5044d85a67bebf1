"""Pure core: plain data in, plain data out. No sockets, no files, no clocks."""
