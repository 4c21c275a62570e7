"""The tour's shared function, in a module of its own so that pool workers
import it by name."""
import quiver


@quiver.memo(name="shared.score", version="1")
def score(n):
    """The same integer arithmetic as examples/demo.c and tour.lua."""
    return sum((i * n) % 7 for i in range(300_000))
