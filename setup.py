"""pip installer for machines without ROS (training clusters, notebooks).

Installs the ROS-free parts: ``cosmos_policy_ros.core`` / ``cosmos_policy_ros.sim`` and the companion
training module as ``cosmos_policy_training``. The ROS nodes (``cosmos_policy_ros.ros``) are included but
need a ROS 2 install and the built messages, which come from ``colcon build`` (robot) or ``make setup``
(development venv). Never ``pip install .`` into the ROS venv made by ``make setup``: pip would treat the
CMake install as an old egg and delete it, generated messages included.
"""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def _requirements(name):
    lines = (HERE / "requirements" / name).read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


packages = [p for p in find_packages(include=["cosmos_policy_ros", "cosmos_policy_ros.*"])]
packages += ["cosmos_policy_training"] + [
    "cosmos_policy_training." + p for p in find_packages(where="training")
]

setup(
    name="cosmos_policy_ros",
    version="0.1.0",
    description="Cosmos Policy on ALOHA with ROS 2: inference core, simulated ALOHA and training module",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"cosmos_policy_training": "training"},
    install_requires=_requirements("core.txt"),
    extras_require={"sim": _requirements("sim.txt"), "test": _requirements("test.txt")},
    entry_points={"console_scripts": ["cosmos-policy=cosmos_policy_ros.cli:main"]},
)
