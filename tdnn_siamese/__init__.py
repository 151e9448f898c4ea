"""tdnn-siamese: online signature verification with Siamese time-delay neural networks.

After Bromley, Guyon, LeCun, Säckinger & Shah, "Signature Verification using a
Siamese Time Delay Neural Network" (NIPS 1993). Modules, in data-flow order:
``formats`` -> ``signature`` -> ``features``; ``datasets`` finds corpora;
``synth`` makes synthetic ones; ``cli`` is the command line.
"""

__version__ = "0.1.0"
