"""What is made of stored records, and only of them: the report (:mod:`.report`, built from
:mod:`.sources`, :mod:`.summary` and :mod:`.tables`, with the figures of :mod:`.plots`), runs side by
side (:mod:`.compare`), the regression gate (:mod:`.gate`), Pareto fronts (:mod:`.pareto`), and many
runs across commits (:mod:`.history`, read by :mod:`.series`, its steps found by :mod:`.steps`, its
page in :mod:`.history_page`) with the formats CI dashboards read (:mod:`.export`). Nothing here runs
a model, so a run from any machine reads the same way.
"""
