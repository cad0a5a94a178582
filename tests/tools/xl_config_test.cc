// xl.cfg files as `pvio create FILE` reads them: what xl users write parses into the domain
// they meant, and every mistake is reported with its line and key.
#include <gtest/gtest.h>

#include "xl_config.h"

namespace pvio::cli {
namespace {

bool parse(const std::string& text, DomainConfigFile* c, ConfigError* e) {
  return parse_xl_config(text, "/srv/vm", c, e);
}

TEST(XlConfig, AUserModeDomainWithDiskAndVif) {
  const std::string text = R"(# a student's VM
name = "student-1"
memory = 256
vcpus = 2
disk = [ 'format=raw, vdev=xvda, access=rw, target=images/s1.img',
         'target=/dev/vg0/s1-data,vdev=xvdb,access=ro' ]
vif = [ 'mac=00:16:3e:01:02:03, bridge=pviobr0' ]
on_poweroff = 'destroy'
on_reboot = "restart"   # as xl
on_crash = 'preserve'
)";
  DomainConfigFile c;
  ConfigError e;
  ASSERT_TRUE(parse(text, &c, &e)) << e.to_string("f.cfg");
  EXPECT_EQ(c.name, "student-1");
  EXPECT_EQ(c.memory_mib, 256u);
  EXPECT_EQ(c.vcpus, 2u);
  EXPECT_TRUE(c.kernel.empty());
  ASSERT_EQ(c.disks.size(), 2u);
  EXPECT_EQ(c.disks[0].target, "/srv/vm/images/s1.img");  // relative to the file's directory
  EXPECT_EQ(c.disks[0].vdev, "xvda");
  EXPECT_EQ(c.disks[0].access, "rw");
  EXPECT_EQ(c.disks[1].target, "/dev/vg0/s1-data");
  EXPECT_EQ(c.disks[1].access, "ro");
  ASSERT_EQ(c.vifs.size(), 1u);
  EXPECT_EQ(c.vifs[0].mac, "00:16:3e:01:02:03");
  EXPECT_EQ(c.vifs[0].bridge, "pviobr0");
  EXPECT_EQ(c.on_poweroff, OnEvent::Destroy);
  EXPECT_EQ(c.on_reboot, OnEvent::Restart);
  EXPECT_EQ(c.on_crash, OnEvent::Preserve);
}

TEST(XlConfig, APvhDomainWithKernelAndCmdline) {
  DomainConfigFile c;
  ConfigError e;
  ASSERT_TRUE(parse("type = 'pvh'\nname='mini'\nkernel = \"/boot/mini-os\"\nextra = 'console=hvc0'\n"
                    "memory=32\ndisk=['/srv/img/a.img']\n",
                    &c, &e))
      << e.to_string("f.cfg");
  EXPECT_EQ(c.kernel, "/boot/mini-os");
  EXPECT_EQ(c.cmdline, "console=hvc0");
  ASSERT_EQ(c.disks.size(), 1u);
  EXPECT_EQ(c.disks[0].target, "/srv/img/a.img");  // xl's positional target
  EXPECT_EQ(c.disks[0].vdev, "xvda");
}

struct Bad {
  const char* text;
  int line;
  const char* key;
  const char* message;
};

class XlConfigErrors : public ::testing::TestWithParam<Bad> {};

TEST_P(XlConfigErrors, NameTheLineAndKey) {
  const Bad b = GetParam();
  DomainConfigFile c;
  ConfigError e;
  ASSERT_FALSE(parse(b.text, &c, &e));
  EXPECT_EQ(e.line, b.line) << e.to_string("f.cfg");
  EXPECT_EQ(e.key, b.key) << e.to_string("f.cfg");
  EXPECT_NE(e.message.find(b.message), std::string::npos) << e.to_string("f.cfg");
}

INSTANTIATE_TEST_SUITE_P(
    Cases, XlConfigErrors,
    ::testing::Values(
        Bad{"name='a'\nmemory = lots\n", 2, "memory", "a value is a number"},
        Bad{"name='a'\nmemory = 0\n", 2, "memory", "not a size in MiB"},
        Bad{"name='a'\n\nvcpus = '2'\n", 3, "vcpus", "expected a number"},
        Bad{"name='a'\ndisk = [ 'vdev=xvda' ]\n", 2, "disk", "needs target="},
        Bad{"name='a'\ndisk = [ 'target=x,format=qcow2' ]\n", 2, "disk", "only format=raw"},
        Bad{"name='a'\ndisk = [ 'target=x,acess=rw' ]\n", 2, "disk", "unknown disk key 'acess'"},
        Bad{"name='a'\nvif = [ 'mac=01:16:3e:00:00:01' ]\n", 2, "vif", "not a unicast"},
        Bad{"name='a'\non_crash = 'reboot'\n", 2, "on_crash", "not destroy, restart or preserve"},
        Bad{"name='a'\nname='b'\n", 2, "name", "given twice"},
        Bad{"name='a'\nmemroy = 64\n", 2, "memroy", "unknown key"},
        Bad{"name='a\n", 1, "name", "unterminated string"},
        Bad{"name='a'\ndisk = [ 'target=x'\n  'target=y' ]\n", 2, "disk", "expected ',' or ']'"},
        Bad{"memory = 64\n", 0, "name", "needs a name"},
        Bad{"name = 'a' memory = 4\n", 1, "name", "unexpected text"},
        Bad{"type = 'pv'\nname='a'\n", 1, "type", "'pvh' and 'hvm'"}));

// Checks made after parsing (does the disk image exist, is the kernel PVH) name the line of
// the key they are about: the parser records where each key was given.
TEST(XlConfig, RecordsTheLineOfEveryKey) {
  const std::string text = "# comment\nname = \"a\"\n\ndisk = [ 'target=x.img',\n"
                           "         'target=y.img,vdev=xvdb' ]\nkernel = \"k\"\n";
  DomainConfigFile c;
  ConfigError e;
  ASSERT_TRUE(parse(text, &c, &e)) << e.to_string("f.cfg");
  EXPECT_EQ(c.key_lines.at("name"), 2);
  EXPECT_EQ(c.key_lines.at("disk"), 4);  // where the list starts
  EXPECT_EQ(c.key_lines.at("kernel"), 6);
  EXPECT_FALSE(c.key_lines.contains("memory"));
}

TEST(XlConfig, ErrorTextCarriesFileLineAndKey) {
  ConfigError e{7, "memory", "bad"};
  EXPECT_EQ(e.to_string("vm.cfg"), "vm.cfg:7: memory: bad");
}

}  // namespace
}  // namespace pvio::cli
