"""The animated .glb of a track: read back byte by byte and skinned by glTF's rules in float64
NumPy, it must give smal_forward's vertices for a body model whose skinning glTF can express
(four weights per vertex, no pose blend shapes); trimesh must load it."""

import json
import struct

import jax.numpy as jnp
import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from animax.geometry import axis_angle_to_rotmat
from animax.smal import load_smal, smal_forward
from animax.smal.standin import walking_pose
from animax.track.gltf import top_weights, write_glb

FRAMES = 12
COMPONENTS = {5126: np.float32, 5123: np.uint16, 5125: np.uint32}
WIDTHS = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def read_glb(path):
    """(document, accessor reader) of a .glb, by the container's layout."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    json_length, json_type = struct.unpack_from("<II", data, 12)
    document = json.loads(data[20:20 + json_length])
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + json_length)
    assert (json_type, bin_type) == (0x4E4F534A, 0x004E4942)
    binary = data[28 + json_length:28 + json_length + bin_length]

    def accessor(index):
        a = document["accessors"][index]
        view = document["bufferViews"][a["bufferView"]]
        width = WIDTHS[a["type"]]
        array = np.frombuffer(binary, COMPONENTS[a["componentType"]], a["count"] * width, view["byteOffset"])
        return array.reshape(a["count"], width) if width > 1 else array

    return document, accessor


def skin_frame(document, accessor, frame):
    """glTF's skinning at one sampled frame, float64: joint world matrices through the node
    tree, times the inverse bind matrices, blended by JOINTS_0/WEIGHTS_0."""
    nodes = document["nodes"]
    local = {i: {"translation": np.array(n.get("translation", [0, 0, 0]), np.float64),
                 "rotation": np.array(n.get("rotation", [0, 0, 0, 1]), np.float64)} for i, n in enumerate(nodes)}
    animation = document["animations"][0]
    for channel in animation["channels"]:
        sampler = animation["samplers"][channel["sampler"]]
        local[channel["target"]["node"]][channel["target"]["path"]] = accessor(sampler["output"])[frame]
    parent = {c: i for i, n in enumerate(nodes) for c in n.get("children", [])}

    def world(i):
        m = np.eye(4)
        m[:3, :3] = Rotation.from_quat(local[i]["rotation"]).as_matrix()    # (x, y, z, w), as glTF
        m[:3, 3] = local[i]["translation"]
        return world(parent[i]) @ m if i in parent else m

    skin = document["skins"][0]
    inverse_bind = accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
    joint_matrices = np.stack([world(j) @ ib for j, ib in zip(skin["joints"], inverse_bind)])
    primitive = document["meshes"][0]["primitives"][0]
    positions = accessor(primitive["attributes"]["POSITION"]).astype(np.float64)
    joints = accessor(primitive["attributes"]["JOINTS_0"]).astype(int)
    weights = accessor(primitive["attributes"]["WEIGHTS_0"]).astype(np.float64)
    blended = np.einsum("vk,vkij->vij", weights, joint_matrices[joints])
    return np.einsum("vij,vj->vi", blended[:, :3, :3], positions) + blended[:, :3, 3]


def walk_track(body):
    """A turning, striding, moving stand-in: [T, J, 3, 3] rotations and [T, 3] translations."""
    phase = np.linspace(0.0, 2 * np.pi, FRAMES)
    axis_angles = walking_pose(body.num_joints)[None] * np.sin(phase)[:, None, None]
    axis_angles[:, 0] = np.stack([0.1 * np.sin(phase), np.zeros(FRAMES), np.linspace(0.0, 3.0, FRAMES)], -1)
    rotations = np.asarray(axis_angle_to_rotmat(jnp.asarray(axis_angles, jnp.float32)))
    return rotations, np.stack([np.linspace(0, 2, FRAMES), np.zeros(FRAMES), 0.05 * np.sin(phase)], -1)


def test_the_glb_skins_to_the_body_models_vertices(tmp_path):
    body = load_smal()
    betas = np.random.default_rng(0).normal(0.0, 0.5, 10).astype(np.float32)
    rotations, translation = walk_track(body)
    write_glb(tmp_path / "track.glb", body, betas, rotations, translation, fps=25.0)
    document, accessor = read_glb(tmp_path / "track.glb")

    # What glTF can express: the four largest weights (renormalised), no pose correctives.
    joints, weights = top_weights(body.lbs_weights)
    dense = np.zeros(body.lbs_weights.shape, np.float32)
    for slot in range(joints.shape[1]):       # unused slots (weight 0) all name joint 0: add, not put
        np.add.at(dense, (np.arange(len(dense)), joints[:, slot].astype(int)), weights[:, slot])
    expressible = body.replace(lbs_weights=jnp.asarray(dense), pose_basis=jnp.zeros_like(body.pose_basis))
    expected = smal_forward(expressible, jnp.asarray(betas)[None].repeat(FRAMES, 0), jnp.asarray(rotations),
                            jnp.asarray(translation, jnp.float32))["vertices"]
    scale = float(np.abs(expected).max())
    for frame in (0, FRAMES // 2, FRAMES - 1):
        # float32 in the file and in smal_forward: a few roundings per level of a chain of
        # at most ~15 joints, each relative 2^-24, on coordinates of size `scale`.
        np.testing.assert_allclose(skin_frame(document, accessor, frame), expected[frame],
                                   atol=64 * 2.0**-24 * 15 * scale, err_msg=f"frame {frame}")
    times = accessor(document["animations"][0]["samplers"][0]["input"])
    np.testing.assert_allclose(times, np.arange(FRAMES) / 25.0, rtol=1e-6)


def test_the_glb_has_the_skeleton_and_loads_in_trimesh(tmp_path):
    body = load_smal()
    rotations, translation = walk_track(body)
    write_glb(tmp_path / "track.glb", body, None, rotations, translation)
    document, accessor = read_glb(tmp_path / "track.glb")
    skin = document["skins"][0]
    assert len(skin["joints"]) == body.num_joints
    names = {i: n.get("name") for i, n in enumerate(document["nodes"])}
    parent = {c: i for i, n in enumerate(document["nodes"]) for c in n.get("children", [])}
    for j, p in enumerate(body.parents):
        node = skin["joints"][j]
        assert names[node] == body.joint_names[j]
        assert (parent.get(node) == skin["joints"][p]) if p >= 0 else node not in parent
    channels = document["animations"][0]["channels"]
    assert len(channels) == body.num_joints + 1
    assert all(len(accessor(s["output"])) == FRAMES for s in document["animations"][0]["samplers"])
    # Quaternions keep their sign from frame to frame (interpolation takes the short way).
    for sampler in document["animations"][0]["samplers"][:-1]:
        q = accessor(sampler["output"])
        assert (np.sum(q[1:] * q[:-1], axis=-1) >= 0).all()
    loaded = trimesh.load(tmp_path / "track.glb")
    mesh = next(iter(loaded.geometry.values()))
    assert mesh.vertices.shape == (body.num_vertices, 3) and len(mesh.faces) == len(body.faces)
    assert not list(tmp_path.glob(".*"))                   # no temporary file left


def test_the_khronos_validator_finds_no_error_and_no_warning(tmp_path, released_smal_file):
    """The reference validator on a track of the stand-in (many vertices with fewer than four
    joints: their unused slots must name joint 0) and of a random model in SMAL's layout."""
    from helpers.gltf_validator import validate

    for name, body in [("standin", load_smal()), ("random", load_smal(released_smal_file[0]))]:
        rotations, translation = walk_track(body)
        write_glb(tmp_path / f"{name}.glb", body, None, rotations, translation)
        report = validate(tmp_path / f"{name}.glb")
        issues = report["issues"]
        assert issues["numErrors"] == 0 and issues["numWarnings"] == 0, (name, issues["messages"][:5])
        assert report["info"]["animationCount"] == 1 and report["info"]["totalVertexCount"] == body.num_vertices
