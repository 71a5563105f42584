"""Does a compiled MAE forward draw the same random masks as eager from the same seed?"""
import torch

from maelab.models.mae import MAE

torch.manual_seed(0)
m = MAE.from_preset("ref").train()
x = torch.randn(4, 3, 32, 32)
def masks(fn):
    torch.manual_seed(123)
    out = fn(x)
    after = torch.rand(3)  # the global generator's next draw (the next crops)
    return out, after
eager = masks(m)
compiled = masks(torch.compile(m))
print("eager output types:", [type(o).__name__ for o in eager[0]][:4])
mask_e, mask_c = eager[0][2], compiled[0][2]
print("same masks:", torch.equal(mask_e, mask_c))
print("same next global draw:", torch.equal(eager[1], compiled[1]))
