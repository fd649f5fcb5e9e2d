"""The license-free stand-in quadruped: layout, a sound mesh, anatomy, shape space, skinning."""

import numpy as np
import pytest
import scipy.sparse
import trimesh
from scipy.spatial import cKDTree

from animax.smal.constants import JOINT_NAMES, KEYPOINT_NAMES, NUM_JOINTS, PARENTS
from animax.smal.standin import SHAPE_PARAMETERS, build_standin

KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
J = {name: i for i, name in enumerate(JOINT_NAMES)}


@pytest.fixture(scope="module")
def standin():
    return build_standin()


def keypoints(data, vertices):
    return np.stack([vertices[list(s)].mean(0) for s in data["keypoint_vertex_sets"]])


def mirror_index(vertices):
    """Vertex i's mirror image (y -> -y) is vertex mirror_index[i]; asserts it exists."""
    distance, index = cKDTree(vertices).query(vertices * [1, -1, 1])
    assert distance.max() < 1e-9
    return index


def lbs(data, rotations):
    """Posed vertices [V,3] of the template: plain float64 linear blend skinning.

    rotations [35,3,3] are local joint rotations; joint 0 is the global orientation.
    """
    v = data["v_template"]
    joints = data["J_regressor"] @ v
    world = np.zeros((NUM_JOINTS, 4, 4))
    for j, parent in enumerate(PARENTS):  # parents come before their children
        local = np.eye(4)
        local[:3, :3] = rotations[j]
        local[:3, 3] = joints[j] - (joints[parent] if parent >= 0 else 0)
        world[j] = local if parent < 0 else world[parent] @ local
    world[:, :3, 3] -= np.einsum("jab,jb->ja", world[:, :3, :3], joints)  # relative to rest
    blended = np.einsum("vj,jab->vab", data["weights"], world)
    return np.einsum("vab,vb->va", blended[:, :3, :3], v) + blended[:, :3, 3]


def test_arrays_have_the_released_smal_layout(standin):
    v = standin["v_template"]
    num_vertices = v.shape[0]
    assert 2000 <= num_vertices <= 4000
    assert v.dtype == np.float64
    assert standin["shapedirs"].shape == (num_vertices, 3, 41)
    assert standin["posedirs"].shape == (num_vertices, 3, 306)
    assert standin["weights"].shape == (num_vertices, NUM_JOINTS)
    assert scipy.sparse.isspmatrix_csr(standin["J_regressor"])
    assert standin["J_regressor"].shape == (NUM_JOINTS, num_vertices)
    assert standin["f"].dtype == np.int64 and standin["f"].shape[1] == 3
    assert standin["f"].min() == 0 and standin["f"].max() == num_vertices - 1
    kintree = standin["kintree_table"]
    assert kintree.dtype == np.int64
    assert kintree[0, 0] == 4294967295
    np.testing.assert_array_equal(kintree[0, 1:], PARENTS[1:])
    np.testing.assert_array_equal(kintree[1], np.arange(NUM_JOINTS))
    assert tuple(standin["joint_names"]) == JOINT_NAMES
    assert len(standin["keypoint_vertex_sets"]) == len(KEYPOINT_NAMES) == 26
    assert all(0 < len(s) and all(0 <= i < num_vertices for i in s)
               for s in standin["keypoint_vertex_sets"])


def test_weights_and_regressor_are_convex_and_local(standin):
    weights, regressor = standin["weights"], standin["J_regressor"].toarray()
    assert weights.min() >= 0 and regressor.min() >= 0
    np.testing.assert_allclose(weights.sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(regressor.sum(1), 1, atol=1e-12)
    assert (weights > 0).sum(1).max() <= 4  # a few joints per vertex
    # every joint skins something, and its regressor uses only a handful of vertices
    assert (weights.max(0) >= 0.5).all()
    assert ((regressor > 0).sum(1) <= 16).all()


def test_mesh_is_closed_manifold_and_outward(standin):
    mesh = trimesh.Trimesh(standin["v_template"], standin["f"], process=False)
    assert mesh.is_watertight
    assert mesh.is_winding_consistent
    assert mesh.volume > 0
    assert mesh.area_faces.min() > 0


def test_template_is_centred_and_mirror_symmetric(standin):
    v = standin["v_template"]
    np.testing.assert_allclose(v.min(0) + v.max(0), 0, atol=1e-12)
    mirror = mirror_index(v)
    # the weights mirror too, with left and right joints swapped
    swap = [J[{"L": "R", "R": "L"}.get(n[0], n[0]) + n[1:]] for n in JOINT_NAMES]
    np.testing.assert_allclose(standin["weights"][mirror][:, swap], standin["weights"], atol=1e-12)


def test_builds_are_deterministic_and_fewer_betas_are_a_prefix(standin):
    again = build_standin()
    for key, value in standin.items():
        if scipy.sparse.issparse(value):
            assert (value != again[key]).nnz == 0, key
        elif isinstance(value, tuple):
            assert value == again[key], key
        else:
            np.testing.assert_array_equal(np.asarray(value), np.asarray(again[key]), err_msg=key)
    np.testing.assert_array_equal(build_standin(12)["shapedirs"], standin["shapedirs"][..., :12])


def test_keypoints_sit_on_the_named_body_parts(standin):
    v = standin["v_template"]
    k = keypoints(standin, v)
    nose = k[KP["nose"]]
    assert np.argmax(k[:, 0]) == KP["nose"]
    assert nose[0] > v[:, 0].max() - 0.01
    paws = {KP[f"{s}_{e}_paw"] for s in ("left", "right") for e in ("front", "back")}
    assert set(np.argsort(k[:, 2])[:4]) == paws
    assert np.argmin(k[:, 0]) == KP["tail_end"]
    for name in KEYPOINT_NAMES:
        if name.startswith("left_"):
            left, right = k[KP[name]], k[KP["right_" + name[5:]]]
            assert left[1] > 0, name
            np.testing.assert_allclose(right, left * [1, -1, 1], atol=1e-12, err_msg=name)
        elif not name.startswith("right_"):
            assert abs(k[KP[name], 1]) < 1e-12, name
    # front of the body: head parts ahead of the neck, front legs ahead of the back legs
    assert k[[KP["left_eye"], KP["left_ear"], KP["mouth_mid"]], 0].min() > k[KP["neck"], 0]
    assert k[KP["left_front_paw"], 0] > 0 > k[KP["left_back_paw"], 0]
    assert k[KP["left_ear"], 2] > k[KP["left_eye"], 2] > k[KP["mouth_mid"], 2]
    assert k[KP["tail_base"], 0] > k[KP["tail_mid"], 0] > k[KP["tail_end"], 0]
    # along each leg: thigh above knee above paw
    for leg in ("front", "back"):
        thigh, knee, paw = (KP[f"left_{leg}_{part}"] for part in ("thigh", "knee", "paw"))
        assert k[thigh, 2] > k[knee, 2] > k[paw, 2]


def test_joints_follow_the_smal_skeleton(standin):
    joints = standin["J_regressor"] @ standin["v_template"]
    x, y, z = joints.T
    spine = [J[n] for n in ("root", "pelvis0", "spine", "spine0", "spine1", "spine2", "spine3")]
    assert np.all(np.diff(x[spine]) > 0.05)  # hips to shoulders, forwards
    tail = [J[f"Tail{i}"] for i in range(1, 8)]
    assert np.all(np.diff(x[tail]) < 0) and x[tail[0]] < x[J["root"]]
    for side, sign in (("L", 1), ("R", -1)):
        for chain, attached in ((("Leg1", "Leg2", "Leg3", "Foot"), "spine3"),
                                (("LegBack1", "LegBack2", "LegBack3", "FootBack"), "root")):
            leg = [J[side + n] for n in chain]
            assert np.all(np.diff(z[leg]) < 0)  # downwards
            assert np.all(sign * y[leg] > 0.05)
            assert abs(x[leg[0]] - x[J[attached]]) < 0.1
    assert z[J["Head"]] > z[J["Neck"]] > z[J["spine3"]]
    assert x[J["Mouth"]] > x[J["Head"]]
    assert z[J["LEar"]] > z[J["Head"]] and y[J["LEar"]] > 0 > y[J["REar"]]


def test_named_shape_directions_do_what_they_say(standin):
    v, dirs = standin["v_template"], standin["shapedirs"]
    names = [name for name, _, _ in SHAPE_PARAMETERS]
    assert names[:8] == ["body_length", "leg_length", "girth", "neck_length", "tail_length",
                         "head_size", "ear_size", "muzzle_length"]

    def change(name, measure):
        """measure(keypoints, joints, vertices) after one unit of `name`, minus before."""
        varied = v + dirs[..., names.index(name)]
        return (measure(keypoints(standin, varied), standin["J_regressor"] @ varied, varied)
                - measure(keypoints(standin, v), standin["J_regressor"] @ v, v))

    def radius(keypoint):
        """Mean distance of a keypoint's vertices from their mean: the body part's radius."""
        ids = list(standin["keypoint_vertex_sets"][KP[keypoint]])
        return lambda k, j, verts: np.linalg.norm(verts[ids] - verts[ids].mean(0), axis=1).mean()

    def kp(name, axis):
        return lambda k, j, verts: k[KP[name], axis]

    def joint_distance(a, b):
        return lambda k, j, verts: np.linalg.norm(j[J[a]] - j[J[b]])

    assert change("body_length", joint_distance("root", "spine3")) > 0.07
    assert change("leg_length", kp("left_front_paw", 2)) < -0.03
    assert change("leg_length", kp("right_back_paw", 2)) < -0.03
    assert abs(change("leg_length", lambda k, j, verts: j[J["spine1"], 2])) < 1e-12
    assert change("girth", kp("left_shoulder", 1)) > 0.01
    assert change("neck_length", joint_distance("Neck", "Head")) > 0.04
    assert change("tail_length", kp("tail_end", 0)) < -0.05
    assert change("head_size", kp("left_eye", 1)) > 0.005
    assert change("ear_size", kp("left_ear", 2)) > 0.01
    assert change("muzzle_length", lambda k, j, _: k[KP["nose"], 0] - k[KP["left_eye"], 0]) > 0.02
    assert change("leg_thickness", radius("left_front_knee")) > 0
    assert change("tail_thickness", radius("tail_mid")) > 0
    # the remaining directions: small, smooth, mirror symmetric, all independent
    mirror = mirror_index(v)
    np.testing.assert_allclose(dirs[mirror] * np.array([1, -1, 1])[:, None], dirs, atol=1e-12)
    rest = np.linalg.norm(dirs[..., len(names):], axis=1).max(0)
    assert np.all(rest > 0.001) and np.all(rest < 0.05)
    assert np.linalg.matrix_rank(dirs.reshape(-1, dirs.shape[-1])) == dirs.shape[-1]


def test_bending_the_front_left_leg_moves_only_that_leg(standin):
    v = standin["v_template"]
    angle = np.radians(30)
    rotations = np.tile(np.eye(3), (NUM_JOINTS, 1, 1))
    np.testing.assert_allclose(lbs(standin, rotations), v, atol=1e-12)  # rest pose
    rotations[J["LLeg1"]] = [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                             [-np.sin(angle), 0, np.cos(angle)]]
    moved = np.linalg.norm(lbs(standin, rotations) - v, axis=1) > 1e-12
    on_leg = standin["weights"][:, [J["LLeg1"], J["LLeg2"], J["LLeg3"], J["LFoot"]]].sum(1) > 0
    np.testing.assert_array_equal(moved, on_leg)
    joints = standin["J_regressor"] @ v
    assert np.all(v[moved, 1] > 0)  # left side only
    assert np.all(v[moved, 0] > (joints[J["root"], 0] + joints[J["spine3"], 0]) / 2)  # front half
    assert np.all(v[moved, 2] < joints[J["spine3"], 2])  # the back above the shoulder stays
    paw = list(standin["keypoint_vertex_sets"][KP["left_front_paw"]])
    assert np.linalg.norm(lbs(standin, rotations)[paw] - v[paw]) > 0.1
