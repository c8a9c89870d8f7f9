"""What is made of stored records, and only of them: the report (:mod:`.report`, built from
:mod:`.sources`, :mod:`.summary` and :mod:`.tables`, with the figures of :mod:`.plots`), runs side by
side (:mod:`.compare`), the regression gate (:mod:`.gate`) and Pareto fronts (:mod:`.pareto`). Nothing
here runs a model, so a run from any machine reads the same way.
"""
