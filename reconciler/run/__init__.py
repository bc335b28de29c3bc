"""Stage, run: the long-running reconciler (loop), its leader lease and its HTTP endpoint (webhook).

May import: every stage below it; never the cli."""
