"""The studies that write results/: research code, not part of the installed package. Run them from the checkout
root as `python -m experiments.<module>`; they may import any rtsearch module, and no rtsearch module imports them."""
