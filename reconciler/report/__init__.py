"""Stage, report: plans and rollouts as text a reviewer reads (markdown, JSON, charts).

May import: every stage below it except run; never the cli."""
