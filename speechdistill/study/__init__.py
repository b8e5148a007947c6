"""Train large, then compress (Li et al., ICML 2020): the pieces of ``speechdistill study`` that are not
drivers: the resumable study state and the accuracy-versus-cost frontier (Pareto front, plots, tables)."""
