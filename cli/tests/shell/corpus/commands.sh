# The commands scripts call, with the GNU options real scripts use. Nothing printed depends on
# the user, the host or the file system: no owners, sizes of folders, times of now, or
# directory order (find and grep -r are sorted).
set -e
mkdir -p tree/src/lib tree/docs
printf 'alpha\nbeta\ngamma\n' > tree/src/a.txt
printf 'delta\n' > tree/src/lib/b.txt
printf '# title\n' > tree/docs/readme.md
touch -d '2020-01-02 03:04:05 UTC' tree/src/a.txt
touch -d '2021-01-01 00:00:00 UTC' tree/src/lib/b.txt tree/docs/readme.md
echo "--- ls"
ls tree; ls -1 tree/src; ls -a tree/docs; ls -R tree | grep -v '^$'
ls -la --color=never --time-style=+%Y-%m-%d tree/src | grep '^-' | tr -s ' ' | cut -d' ' -f1,5-
ls -t tree/src/a.txt tree/src/lib/b.txt; ls -S tree/src/a.txt tree/src/lib/b.txt; ls -r tree
ls -d tree/*/; ls -F tree/src
ls nope 2>&1 || echo "ls status $?"
echo "--- cat head tail wc"
cat tree/src/a.txt tree/src/lib/b.txt | cat -n
head -n 2 tree/src/a.txt; head -c 3 tree/src/a.txt; echo; head -1 tree/src/a.txt
tail -n 1 tree/src/a.txt; tail -n +2 tree/src/a.txt; tail -c 6 tree/src/a.txt
wc -l tree/src/a.txt; wc -c < tree/src/a.txt; wc -w < tree/src/a.txt; wc -l tree/src/a.txt tree/src/lib/b.txt
echo "--- cp mv rm mkdir rmdir touch ln chmod"
cp -r tree/src copy; ls -R copy | grep -v '^$'
cp -a tree/src/a.txt kept.txt; stat -c '%a %Y' tree/src/a.txt kept.txt
cp tree/src/a.txt plain.txt; [ "$(stat -c %Y plain.txt)" != "$(stat -c %Y kept.txt)" ] && echo "cp without -a takes a new mtime"
cp -a tree archive; diff -r tree archive && echo "cp -a copy is identical"
mv plain.txt moved.txt; [ ! -e plain.txt ] && cat moved.txt | head -1
mv moved.txt copy/; ls copy
mkdir -p deep/er/est; rmdir deep/er/est deep/er deep; [ ! -e deep ] && echo "rmdir chain"
rmdir tree 2>&1 || echo "rmdir non-empty status $?"
mkdir tree 2>&1 || echo "mkdir existing status $?"
touch new.txt; [ -f new.txt ] && [ ! -s new.txt ] && echo "touch creates empty"
ln -s tree/src/a.txt link; readlink link; cat link | wc -l; [ -L link ] && echo "ln -s made a link"
ln tree/src/a.txt hard; stat -c %h hard
ln -sf tree/docs/readme.md link; readlink link
printf '#!/bin/sh\necho script ran\n' > s.sh; chmod +x s.sh; ./s.sh; stat -c %a s.sh
chmod 640 s.sh; stat -c %a s.sh; chmod u=rwx,go= s.sh; stat -c %a s.sh; chmod -R a+rX copy; stat -c %a copy
rm -rf copy archive; [ ! -e copy ] && echo "rm -rf"
rm nope 2>&1 || echo "rm status $?"; rm -f nope && echo "rm -f missing is fine"
rm -r tree/docs; ls tree
echo "--- sort uniq cut tr tee"
printf '10\n9\n100\n9\n' | sort; printf '10\n9\n100\n9\n' | sort -n; printf '10\n9\n100\n9\n' | sort -nu
printf 'b\na\nc\n' | sort -r; printf 'x 3\ny 1\nz 2\n' | sort -k2 -n; printf 'a,2\nb,1\n' | sort -t, -k2
printf 'a\na\nb\na\n' | uniq; printf 'a\na\nb\na\n' | sort | uniq -c; printf 'a\na\nb\n' | uniq -d
echo "k1:v1:x" | cut -d: -f2; echo "k1:v1:x" | cut -d: -f1,3; echo "abcdef" | cut -c2-4
echo "hello world" | tr a-z A-Z; echo "hello" | tr -d l; echo "aaabbb" | tr -s ab; echo "a b" | tr ' ' '\n'
echo first | tee t.txt; echo second | tee -a t.txt > /dev/null; cat t.txt
echo "--- grep"
printf 'apple\nbanana\ncherry\nApple pie\n' > fruit.txt
grep an fruit.txt; grep -c a fruit.txt; grep -i apple fruit.txt; grep -v a fruit.txt
grep -n rr fruit.txt; grep -o 'an' fruit.txt; grep -E '^(apple|cherry)$' fruit.txt; grep -w pie fruit.txt
grep -q banana fruit.txt && echo "grep -q found"; grep -q kiwi fruit.txt || echo "grep -q status $?"
grep -r alpha tree; grep -rl a tree | sort; grep -l apple fruit.txt t.txt
grep -F 'a.p' fruit.txt || echo "grep -F literal: $?"; grep -x apple fruit.txt
grep pattern nope.txt 2>&1 || echo "grep missing file status $?"
echo "--- sed"
echo abc | sed s/b/X/; echo aaa | sed 's/a/b/g'; echo 'x1y2' | sed -E 's/([a-z])([0-9])/\2\1/g'
sed -n 2p fruit.txt; sed -n '/an/p' fruit.txt; sed '1d' fruit.txt | head -1; sed -n '$=' fruit.txt
sed -i 's/apple/APPLE/' fruit.txt; head -1 fruit.txt; sed -i.bak 's/APPLE/apple/' fruit.txt; head -1 fruit.txt.bak fruit.txt
printf 'a\nb\n' | sed -e 's/a/1/' -e 's/b/2/'; printf 'one\n' | sed 'a\
appended'; echo 'path/to/x' | sed 's|/|\\|g'
echo "--- find xargs"
find tree | sort; find tree -type f | sort; find tree -type d -name lib; find tree -maxdepth 1 | sort
find tree -name '*.txt' | sort; find tree -name '*.txt' -newer tree/src/a.txt
find tree -type f -exec wc -l {} \; | sort; find tree -name '*.txt' -exec cat {} + | sort
find tree -name nothing; find nope 2>&1 || echo "find missing status $?"
find tree -type f -print0 | sort -z | xargs -0 cat
printf 'a b\nc\n' | xargs echo; printf 'a b\nc\n' | xargs -n 1 echo; printf 'x\ny\n' | xargs -I{} echo "<{}>"
printf '' | xargs echo "runs once with no input"; echo 1 | xargs false || echo "xargs status $?"
echo "--- paths"
basename /a/b/c.txt; basename /a/b/c.txt .txt; dirname /a/b/c.txt; dirname c.txt; basename -a x/1 y/2
[ "$(realpath tree/src/../src/lib)" = "$PWD/tree/src/lib" ] && echo "realpath resolves"; realpath --relative-to=tree/src tree/src/lib/b.txt
d=$(mktemp -d); [ -d "$d" ] && case $d in /tmp/tmp.*) echo "mktemp -d in /tmp";; esac; rmdir "$d"
f=$(mktemp); [ -f "$f" ] && [ ! -s "$f" ] && echo "mktemp file"; rm "$f"
echo "--- date sleep seq"
date -u -d @0 +%Y-%m-%d; date -u -d '2024-02-29 12:34:56' '+%A %j %H:%M:%S'; date -u -d @86400 +%s
[ "$(date +%Y)" -ge 2024 ] && echo "date +%Y is this century"
case $(date +%s%N) in *[!0-9]*) echo "bad %N";; *) echo "date +%s%N is digits";; esac
sleep 0.01; sleep 0 && echo slept
seq 3; seq 2 4; seq -s, 1 5; seq 1 2 9; seq -w 8 10; seq 3 1
echo "--- env printenv which uname id whoami true false yes"
env -i A=1 B=2 env; env -i sh -c 'echo "empty env: [${PATH-unset}]"' 2>&1 || true
X=1 env -u X printenv X || echo "env -u removed it: $?"
Y=val printenv Y; printenv NOPE || echo "printenv missing: $?"
env A=1 sh -c 'echo $A'
which sh; which nope || echo "which missing: $?"
uname -s; uname -m | grep -q . && echo "uname -m says something"
id -u | grep -qE '^[0-9]+$' && echo "id -u is a number"; [ "$(id -un)" = "$(whoami)" ] && echo "whoami is id -un"
[ "$(id -u "$(whoami)")" = "$(id -u)" ] && echo "id of the user name"
true && echo "true 0"; false || echo "false $?"
yes | head -3; yes no | head -2
echo "--- tar gzip"
tar czf t.tgz tree; tar tzf t.tgz | sort
mkdir out; tar xzf t.tgz -C out; diff -r tree out/tree && echo "tar round trip"
tar cf t.tar -C tree src; tar tf t.tar | sort; mkdir out2; tar xf t.tar -C out2; stat -c %Y out2/src/a.txt
echo hello > g.txt; gzip g.txt; [ ! -e g.txt ] && [ -f g.txt.gz ] && echo gzipped; zcat g.txt.gz; gunzip g.txt.gz; cat g.txt
gzip -c g.txt | gunzip; gzip -9 -k g.txt; ls g.txt*; gzip -dc g.txt.gz; gzip -t g.txt.gz && echo "gzip -t ok"
echo "--- more coreutils"
printf 'b\na\n' > x; printf 'b\nc\n' > y; comm -12 x y 2>/dev/null || true; sort x | comm - y
diff x y || echo "diff status $?"; cmp -s x x && echo "cmp same"
expr 2 + 3; expr length abc; timeout 0.2 sleep 5 || echo "timeout status $?"
printf 'a\tb\n' | expand -t 4; printf '1\n2\n3\n' | paste -sd+; echo 5 | xargs seq | tac | head -2
stat -c '%s %n' g.txt; du -s --apparent-size -b g.txt | cut -f1; md5sum g.txt; sha256sum < g.txt
nproc | grep -qE '^[0-9]+$' && echo "nproc is a number"; test -w /dev/null && echo "dev null"
echo "--- awk bash hostname"
printf 'a 1\nb 2\nc 3\n' | awk '$2 > 1 { s += $2; n++ } END { print n, s }'
awk -F: 'NR == 1 { print NF }' < /dev/null; echo "x:y:z" | awk -F: '{ print $NF, toupper($1) }'
bash -c 'a=(x y z); [[ ${a[1]} == y ]] && echo "bash arrays ${#a[@]}"; echo "${BASH_VERSINFO[0]}" | grep -qE "^[0-9]+$" && echo "bash version"'
hostname | grep -q . && echo "hostname prints a name"
echo "--- done"
