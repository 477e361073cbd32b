from setuptools import find_packages, setup

setup(
    name="relay",
    version="0.1.0",
    description="A durable message relay for AI agents (agent-relay wire protocol v1), on Twisted",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.9",
    packages=find_packages(include=["relay", "relay.*"]) + ["twisted.plugins"],
    package_data={
        "relay": ["schema/*.sql"],
        "relay.web": ["static/*.html", "static/*.js", "static/*.css"],
        "relay.ingest": ["migrations/*.sql"],
        "twisted.plugins": ["relay_plugin.py", "relay_ingest_plugin.py"],
    },
    include_package_data=True,
    install_requires=[
        "twisted[tls]>=23.10.0",
        "treq>=23.11.0",
        "txpostgres>=1.7.0",
        "psycopg2-binary>=2.9",
        "pyopenssl>=23.0.0",
        "service_identity>=21.1.0",
        "zope.interface>=5.0",
        "orjson>=3.9",
        "prometheus_client>=0.17",
    ],
    extras_require={
        "test": ["hypothesis>=6.0", "wheel>=0.40", "selenium>=4.10"],
    },
    entry_points={"console_scripts": ["relay = relay.cli:main"]},
)
