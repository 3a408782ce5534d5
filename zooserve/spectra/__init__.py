"""Mass spectra as the spectra models see them, in one leaf package that training, the service
and the client all import (numpy only; it imports none of them): the binning contract that
turns a peak list into a model's input vector, MGF files, and the zoo's spectrum simulator."""
