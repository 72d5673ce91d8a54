"""Vectors of a run and the searches over them: the store ``predict embed`` appends to
(``store``), nearest neighbours exact or approximate (``index``), near-duplicate groups
(``duplicates``). numpy only; the approximate index needs the ``search`` extra (usearch)."""
