"""The end of the tour: what the shared cache holds, and who computed it."""
import collections

import quiver

cache = quiver.current_cache()
records = list(cache.query(name="shared.score"))
by_lang = collections.Counter(r.lang for r in records)
compute = collections.defaultdict(float)
for r in records:
    compute[r.lang] += r.duration
print(f"shared.score: {len(records)} results in {cache.path}")
for lang, n in sorted(by_lang.items()):
    print(f"  computed by {lang:7s} {n:3d}  ({compute[lang]:.3f} s of work, now everyone's)")
stats = cache.stats()
print(f"cache: {stats['entries']} entries, {stats['bytes']} bytes")
