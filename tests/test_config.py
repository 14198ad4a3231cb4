"""Several hosts from one TOML file (MQIC_HPC_CONFIG), applied by configure_hpc: idempotent, the
file the truth for the groups it lists (dropped ones retire, listed ones come back), and every
mistake named with its host and key."""

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from resources import config
from resources.models import GpuGroup, HpcHost
from resources.operations import set_group_enabled
from resources.services import lock_free_group, release_group, set_enabled

pytestmark = pytest.mark.django_db

TWO_HOSTS = """
[hosts.alpha]
hostname = "login.alpha.example"
user = "mqic"
key = "/etc/mqic/id_ed25519"
known_hosts = "/etc/mqic/known_hosts"
base_dir = "/scratch/mqic"
gpu_groups = ["gpu_a", { name = "gpu_b", devices = "2,3" }]

[hosts.beta]
hostname = "login.beta.example"
port = 2222
base_dir = "/data/mqic"
pueue = "/opt/pueue/bin/pueue -c /home/mqic/pueue.yml"
gpu_groups = ["gpu_a"]
"""


def configure(settings, tmp_path, text):
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    settings.MQIC_HPC_CONFIG = str(path)
    return call_command("configure_hpc", offline=True)


def test_several_hosts_are_configured_from_one_file_and_again_changes_nothing(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    configure(settings, tmp_path, TWO_HOSTS)
    hosts = {h.name: h for h in HpcHost.objects.all()}
    assert set(hosts) == {"alpha", "beta"}
    assert (hosts["beta"].port, hosts["beta"].pueue_command) == (
        2222,
        "/opt/pueue/bin/pueue -c /home/mqic/pueue.yml",
    )
    assert hosts["alpha"].transport == "ssh" and hosts["alpha"].known_hosts_path == "/etc/mqic/known_hosts"
    groups = {(g.host.name, g.pueue_group): g for g in GpuGroup.objects.select_related("host")}
    assert set(groups) == {("alpha", "gpu_a"), ("alpha", "gpu_b"), ("beta", "gpu_a")}
    assert groups[("alpha", "gpu_b")].devices == "2,3"
    assert groups[("beta", "gpu_a")].name == "beta-gpu_a", "group names stay unique across hosts"


def test_a_group_dropped_from_the_file_is_disabled_not_deleted(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    configure(settings, tmp_path, TWO_HOSTS.replace('["gpu_a", { name = "gpu_b", devices = "2,3" }]', '["gpu_a"]'))
    assert GpuGroup.objects.get(host__name="alpha", pueue_group="gpu_b").status == "disabled"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[hosts.x]\nbase_dir='/s'\ngpu_groups=['g']\nhostname='h'\ncolour='red'\n", "unknown key 'colour'"),
        ("[hosts.x]\nbase_dir='/s'\ngpu_groups=['g']\n", "hostname is required for the ssh transport"),
        (
            "[hosts.x]\nhostname='h'\ngpu_groups=['g']\nbase_dir='/'\n",
            "base_dir: the remote base directory cannot be /",
        ),
        (
            "[hosts.x]\nhostname='h'\nbase_dir='/s'\ngpu_groups=['g']\npueue='sh -c id'\n",
            "pueue: the command must run pueue",
        ),
        ("[hosts.x]\nhostname='h'\nbase_dir='/s'\ngpu_groups=[]\n", "gpu_groups must be a non-empty list"),
        ("[hosts.x]\nhostname='h'\nbase_dir='/s'\ngpu_groups=['g','g']\n", "g is listed twice"),
        ("[hosts.x]\nhostname='h'\nbase_dir='/s'\ngpu_groups=['-g']\n", "is not a pueue group name"),
        ("[hosts.x]\nhostname='h'\nbase_dir='/s'\nport=0\ngpu_groups=['g']\n", "port must be a number"),
        ("[hosts.X]\nhostname='h'\nbase_dir='/s'\ngpu_groups=['g']\n", "the host name must be lower-case"),
        ("[hosts.x\n", "is not valid TOML"),
        ("name = 'x'\n", "expected one [hosts.<name>] table per host"),
    ],
)
def test_mistakes_are_named_with_their_host_and_key_and_nothing_is_written(settings, tmp_path, text, message):
    with pytest.raises(CommandError, match=message.replace("[", r"\[").replace(".", r"\.")):
        configure(settings, tmp_path, text)
    assert not HpcHost.objects.exists()


def test_the_short_form_still_configures_one_host(settings):
    settings.MQIC_HPC_CONFIG = ""
    settings.MQIC_HPC_NAME, settings.MQIC_HPC_HOST, settings.MQIC_GPU_GROUPS = "solo", "login.example", ["g1"]
    [(host, groups)] = config.apply(config.from_settings(settings))
    assert (host.name, host.hostname, [g.pueue_group for g in groups]) == ("solo", "login.example", ["g1"])


ONLY_GPU_A = TWO_HOSTS.replace('["gpu_a", { name = "gpu_b", devices = "2,3" }]', '["gpu_a"]')


def alpha_gpu_b():
    return GpuGroup.objects.get(host__name="alpha", pueue_group="gpu_b")


def test_a_group_dropped_while_assigned_is_disabled_by_its_release_and_never_handed_out(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    group = lock_free_group(holder_id=7, group_name="gpu_b")
    configure(settings, tmp_path, ONLY_GPU_A)
    assert alpha_gpu_b().status == "assigned", "its case keeps it until it ends"
    assert release_group(group.pk, holder_id=7, generation=group.lease_generation)
    assert alpha_gpu_b().status == "disabled", "released, it does not come back"
    assert lock_free_group(holder_id=8, group_name="gpu_b") is None
    assert not set_enabled(group.pk, True), "an operator cannot bring back what the file dropped"
    refusal = set_group_enabled(alpha_gpu_b(), True)
    assert not refusal.changed and "dropped from the host configuration" in refusal.message


def test_a_dropped_group_listed_again_is_back_in_service(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    configure(settings, tmp_path, ONLY_GPU_A)
    assert alpha_gpu_b().status == "disabled"
    configure(settings, tmp_path, TWO_HOSTS)
    assert (alpha_gpu_b().status, alpha_gpu_b().retired) == ("available", False)
    assert lock_free_group(holder_id=7, group_name="gpu_b") is not None


def test_a_group_an_operator_disabled_stays_disabled_while_it_is_listed(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    assert set_enabled(alpha_gpu_b().pk, False)
    configure(settings, tmp_path, TWO_HOSTS)
    assert alpha_gpu_b().status == "disabled"


def test_devices_follow_the_file_both_ways(settings, tmp_path):
    configure(settings, tmp_path, TWO_HOSTS)
    configure(settings, tmp_path, TWO_HOSTS.replace('devices = "2,3"', 'devices = ""'))
    assert alpha_gpu_b().devices == ""
    configure(settings, tmp_path, TWO_HOSTS.replace('devices = "2,3"', 'devices = "5"'))
    assert alpha_gpu_b().devices == "5"


def test_the_mistakes_of_every_host_are_reported_at_once(settings, tmp_path):
    text = "[hosts.a]\nbase_dir='/s'\ngpu_groups=['g']\n\n[hosts.b]\nhostname='h'\nbase_dir='/s'\ngpu_groups=[]\n"
    with pytest.raises(CommandError) as error:
        configure(settings, tmp_path, text)
    assert "[hosts.a]: hostname is required for the ssh transport" in str(error.value)
    assert "[hosts.b]: gpu_groups must be a non-empty list" in str(error.value)


def test_a_group_name_that_is_taken_is_a_config_error_and_nothing_is_written(settings, tmp_path):
    """beta's gpu_a would be named beta-gpu_a (alpha has a gpu_a), which alpha's pueue group of that
    very name already is."""
    clash = TWO_HOSTS.replace('["gpu_a", { name = "gpu_b", devices = "2,3" }]', '["gpu_a", "beta-gpu_a"]')
    with pytest.raises(CommandError, match="host beta: gpu_groups: gpu_a would be GPU group beta-gpu_a, a name "):
        configure(settings, tmp_path, clash)
    assert not HpcHost.objects.exists() and not GpuGroup.objects.exists()


def test_the_local_transport_outside_the_demo_needs_saying_so(settings):
    from resources.config import ConfigError, check_host

    table = {"transport": "local", "base_dir": "/data/mqic", "gpu_groups": ["gpu_a"]}
    settings.MQIC_ALLOW_LOCAL_TRANSPORT = False
    with pytest.raises(ConfigError) as refused:
        check_host("here", table, where="test")
    assert "runs the jobs on this machine" in str(refused.value) and "MQIC_ALLOW_LOCAL_TRANSPORT" in str(
        refused.value
    )
    settings.MQIC_ALLOW_LOCAL_TRANSPORT = True
    assert check_host("here", table, where="test").transport == "local"
