/* sign.c: being written (issue 11). */
