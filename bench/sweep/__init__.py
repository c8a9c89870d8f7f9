"""Schedule search (``vptbench sweep``): the grid of pruning schedules (:mod:`.grid`), their cost
table and Pareto front (:mod:`.front`), accuracy in the loop by grid, successive halving or optuna
(:mod:`.search`), and the sweep's figures (:mod:`.plots`).
"""
