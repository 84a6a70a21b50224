from .cli import MODULE_PROG, main

main(prog=MODULE_PROG)
