/* stack.c: being written (issue 11). */
