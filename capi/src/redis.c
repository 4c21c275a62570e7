/* redis.c: being written (issue 11). */
