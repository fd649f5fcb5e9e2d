"""PyTorch forwards of AniMer's networks written from state dicts (torch.nn.functional only),
random AniMer-named state dicts, and their mapping to flax through the product's key table:
the independent references of the network tests."""

import numpy as np
import torch
import torch.nn.functional as F

from animax.convert import keymap


def torch_block(sd, prefix, x, heads):
    """ViTPose block with torch.nn.functional on a torch-layout state dict. x [B, N, W]."""
    b, n, width = x.shape
    y = F.layer_norm(x, (width,), sd[prefix + "norm1.weight"], sd[prefix + "norm1.bias"], 1e-6)
    qkv = F.linear(y, sd[prefix + "attn.qkv.weight"], sd[prefix + "attn.qkv.bias"])
    q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    attn = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    y = (attn @ v).transpose(1, 2).reshape(b, n, width)
    x = x + F.linear(y, sd[prefix + "attn.proj.weight"], sd[prefix + "attn.proj.bias"])
    y = F.layer_norm(x, (width,), sd[prefix + "norm2.weight"], sd[prefix + "norm2.bias"], 1e-6)
    y = F.gelu(F.linear(y, sd[prefix + "mlp.fc1.weight"], sd[prefix + "mlp.fc1.bias"]))
    return x + F.linear(y, sd[prefix + "mlp.fc2.weight"], sd[prefix + "mlp.fc2.bias"])


def torch_vit(sd, images_nchw, heads, depth, prefix=""):
    """(feature map [B, W, h, w], class token [B, W]) as AniMer's backbone returns them."""
    p = prefix
    x = F.conv2d(images_nchw, sd[p + "patch_embed.proj.weight"], sd[p + "patch_embed.proj.bias"], stride=16, padding=2)
    b, width, h, w = x.shape
    x = x.flatten(2).transpose(1, 2)
    x = x + sd[p + "pos_embed"][:, 1:] + sd[p + "pos_embed"][:, :1]
    x = torch.cat([sd[p + "cls_token"].expand(b, -1, -1), x], dim=1)
    for i in range(depth):
        x = torch_block(sd, f"{p}blocks.{i}.", x, heads)
    x = F.layer_norm(x, (width,), sd[p + "last_norm.weight"], sd[p + "last_norm.bias"], 1e-6)
    return x[:, 1:].transpose(1, 2).reshape(b, width, h, w), x[:, 0]


def torch_vit_shapes(width, depth, mlp_dim, tokens):
    """AniMer backbone state-dict shapes (no `backbone.` prefix)."""
    shapes = {"patch_embed.proj.weight": (width, 3, 16, 16), "patch_embed.proj.bias": (width,),
              "pos_embed": (1, 1 + tokens, width), "cls_token": (1, 1, width),
              "last_norm.weight": (width,), "last_norm.bias": (width,)}
    for i in range(depth):
        for name, shape in {"norm1.weight": (width,), "norm1.bias": (width,),
                            "attn.qkv.weight": (3 * width, width), "attn.qkv.bias": (3 * width,),
                            "attn.proj.weight": (width, width), "attn.proj.bias": (width,),
                            "norm2.weight": (width,), "norm2.bias": (width,),
                            "mlp.fc1.weight": (mlp_dim, width), "mlp.fc1.bias": (mlp_dim,),
                            "mlp.fc2.weight": (width, mlp_dim), "mlp.fc2.bias": (width,)}.items():
            shapes[f"blocks.{i}.{name}"] = shape
    return shapes


def torch_attention(q, k, v, heads):
    """AniMer's attention core: split (heads, dim_head) from the last axis, scale the logits."""
    q, k, v = (t.reshape(*t.shape[:2], heads, -1).transpose(1, 2) for t in (q, k, v))
    dots = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    out = dots.softmax(-1) @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def torch_layer(sd, prefix, x, context, heads):
    """`layers.i` of AniMer's TransformerCrossAttn with torch.nn.functional. x [B, N, D]."""
    def norm(i, t):
        return F.layer_norm(t, (t.shape[-1],), sd[f"{prefix}{i}.norm.weight"], sd[f"{prefix}{i}.norm.bias"])

    def linear(name, t):
        return F.linear(t, sd[prefix + name + ".weight"], sd.get(prefix + name + ".bias"))

    q, k, v = linear("0.fn.to_qkv", norm(0, x)).chunk(3, dim=-1)
    x = linear("0.fn.to_out.0", torch_attention(q, k, v, heads)) + x
    k, v = linear("1.fn.to_kv", context).chunk(2, dim=-1)
    x = linear("1.fn.to_out.0", torch_attention(linear("1.fn.to_q", norm(1, x)), k, v, heads)) + x
    return linear("2.fn.net.3", F.gelu(linear("2.fn.net.0", norm(2, x)))) + x


def torch_head(sd, feature_map, depth, heads, prefix=""):
    """AniMer's SMALTransformerDecoderHead (one IEF step) on a torch-layout state dict. feature_map NCHW."""
    p = prefix
    b = feature_map.shape[0]
    context = feature_map.flatten(2).transpose(1, 2)
    x = F.linear(torch.zeros(b, 1, 1), sd[p + "transformer.to_token_embedding.weight"],
                 sd[p + "transformer.to_token_embedding.bias"]) + sd[p + "transformer.pos_embedding"]
    for i in range(depth):
        x = torch_layer(sd, f"{p}transformer.transformer.layers.{i}.", x, context, heads)
    token = x[:, 0]
    pose = F.linear(token, sd[p + "decpose.weight"], sd[p + "decpose.bias"]) + torch.zeros(1, 210)
    betas = F.linear(token, sd[p + "decshape.weight"], sd[p + "decshape.bias"]) + torch.zeros(1, 41)
    cam = F.linear(token, sd[p + "deccam.weight"], sd[p + "deccam.bias"]) + torch.tensor([[0.9, 0.0, 0.0]])
    a = pose.reshape(-1, 2, 3).permute(0, 2, 1)
    b1 = F.normalize(a[:, :, 0])
    b2 = F.normalize(a[:, :, 1] - (b1 * a[:, :, 1]).sum(-1, keepdim=True) * b1)
    rotmat = torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-1).reshape(b, 35, 3, 3)
    return {"pose": rotmat, "pose_6d": pose, "betas": betas, "cam": cam}


def torch_head_shapes(dim, depth, heads, dim_head, mlp_dim, context_dim):
    """AniMer `smal_head.*` state-dict shapes (parameters only; the init_* buffers are constants)."""
    inner = heads * dim_head
    shapes = {"transformer.to_token_embedding.weight": (dim, 1), "transformer.to_token_embedding.bias": (dim,),
              "transformer.pos_embedding": (1, 1, dim),
              "decpose.weight": (210, dim), "decpose.bias": (210,), "decshape.weight": (41, dim),
              "decshape.bias": (41,), "deccam.weight": (3, dim), "deccam.bias": (3,)}
    for i in range(depth):
        for name, shape in {"0.norm.weight": (dim,), "0.norm.bias": (dim,), "0.fn.to_qkv.weight": (3 * inner, dim),
                            "0.fn.to_out.0.weight": (dim, inner), "0.fn.to_out.0.bias": (dim,),
                            "1.norm.weight": (dim,), "1.norm.bias": (dim,), "1.fn.to_q.weight": (inner, dim),
                            "1.fn.to_kv.weight": (2 * inner, context_dim),
                            "1.fn.to_out.0.weight": (dim, inner), "1.fn.to_out.0.bias": (dim,),
                            "2.norm.weight": (dim,), "2.norm.bias": (dim,),
                            "2.fn.net.0.weight": (mlp_dim, dim), "2.fn.net.0.bias": (mlp_dim,),
                            "2.fn.net.3.weight": (dim, mlp_dim), "2.fn.net.3.bias": (dim,)}.items():
            shapes[f"transformer.transformer.layers.{i}.{name}"] = shape
    return shapes


def torch_class_head_shapes(width, hidden, features):
    """AniMer `class_token_head.head.*` shapes: Linear/BatchNorm/ReLU x2, Linear, BatchNorm(affine=False)."""
    shapes = {"0.weight": (hidden, width), "3.weight": (hidden, hidden), "6.weight": (features, hidden)}
    for i, n in ((1, hidden), (4, hidden), (7, features)):
        shapes.update({f"{i}.running_mean": (n,), f"{i}.running_var": (n,), f"{i}.num_batches_tracked": ()})
        if i != 7:
            shapes.update({f"{i}.weight": (n,), f"{i}.bias": (n,)})
    return shapes


def random_state(shapes, seed=0, scale=0.05):
    """Random float32 tensors of the given shapes; norm scales near 1, running variances positive."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            sd[k] = 0.5 + torch.rand(s, generator=g)
        else:
            sd[k] = scale * torch.randn(s, generator=g)
            if "norm" in k and k.endswith("weight"):
                sd[k] += 1.0
    if "patch_embed.proj.weight" in sd:
        sd["patch_embed.proj.weight"] /= 4.0  # fan-in 768: keep patch embeddings O(1)
    return sd


def register_tensors(root: torch.nn.Module, tensors: dict, parameters: bool = True) -> torch.nn.Module:
    """Registers each dotted name of `tensors` on nested sub-modules of `root`, so that
    `root.state_dict()` has exactly those keys: float tensors (but BatchNorm running statistics)
    as parameters when `parameters`, everything else as buffers."""
    for name, value in tensors.items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, torch.nn.Module())
            module = getattr(module, part)
        if parameters and value.is_floating_point() and "running_" not in leaf:
            module.register_parameter(leaf, torch.nn.Parameter(value))
        else:
            module.register_buffer(leaf, value)
    return root


def to_flax_variables(sd, prefix):
    """Maps a state dict through `animax.convert.keymap` -> {collection: subtree of one module}.

    `sd` holds one module's keys without its prefix ("blocks.0.norm1.weight"); `prefix`
    ("backbone.", "smal_head.", "class_token_head.head.") completes AniMer's full names for the
    lookup. Values are torch tensors (copied) or NumPy arrays (shape placeholders stay views).
    Returns the collections that received keys, each holding the tree under the module name
    (e.g. {"params": {"blocks_0": ...}}). Raises on a key the table neither maps nor ignores.
    """
    variables, module = {}, None
    for key, value in sd.items():
        name = prefix + key
        found = keymap.match(name)
        if found is None:
            if keymap.ignore_reason(name) is None:
                raise KeyError(f"{name}: not in animax.convert.keymap")
            continue
        rule, index = found
        collection, owner, *path = keymap.flax_path(rule, index)
        if module not in (None, owner):
            raise ValueError(f"{name} maps into {owner!r}, other keys into {module!r}")
        module = owner
        array = value.detach().cpu().numpy().copy() if isinstance(value, torch.Tensor) else np.asarray(value)
        node = variables.setdefault(collection, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        if path[-1] in node:
            raise ValueError(f"{name}: flax path {keymap.flax_path(rule, index)} mapped twice")
        node[path[-1]] = keymap.to_flax(rule.kind, array)
    return variables
