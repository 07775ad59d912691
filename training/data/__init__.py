"""Built-in datasets (bundled with scikit-learn and statsmodels, so offline) and loaders
for the user's own image folders and CSV files."""
