"""Function-space theory for the networks traindyn simulates (empirical and
infinite-width kernels, kernel-regression dynamics, DMFT). Empty for now: the package is
reserved so that its import name is fixed; nothing here is implemented yet."""
