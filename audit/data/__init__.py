"""Sources: adapters that turn a data set into a cohort of pseudonymous cases."""
