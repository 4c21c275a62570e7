/* remote.c: being written (issue 11). */
