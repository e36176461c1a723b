# Parameter expansion (XCU 2.6.2), arithmetic (2.6.4), field splitting (2.6.5), globbing (2.13).
file=/usr/local/lib/archive.tar.gz
echo "${#file}"
echo "${file%.*} | ${file%%.*} | ${file#*/} | ${file##*/}"
echo "${file%/*} | ${file##*.} | ${file#/usr}"
unset u; empty=
echo "[${u-default}] [${empty-default}] [${empty:-default}] [${u:+alt}] [${file:+alt}]"
echo "${u:=assigned}"; echo "u is now $u"
(echo "${nope:?is required}") 2>&1; echo "status $?"
echo "$((7 / 2)) $((7 % 3)) $((2 * (3 + 4))) $((-5 + 2)) $((1 << 4)) $((0x10)) $((010))"
echo "$((3 > 2)) $((3 < 2)) $((1 && 0)) $((1 || 0)) $((!0)) $((5 == 5 ? 10 : 20))"
i=5; : $((i += 3)); echo "i=$i"; echo "$((i * i))"
n=3; echo "$(( n + 1 ))"
echo "${#}" "${#u}"
s="  lots   of   space  "
set -- $s; echo "$# fields: $*"
IFS=,; list="a,b,,c"; set -- $list; echo "$# comma fields"; IFS=' 	
'
touch b.txt a.txt c.log
echo *.txt
echo *.none
echo "*.txt"
set -f; echo *.txt; set +f
echo [ab].txt ?.log
v='$HOME'; echo "$v"
echo '$single' "\$double" \$bare
echo "a\"b" 'c"d' "e'f"
x=hello; echo "${x}world" "$x"_suffix
echo "${x#h}" "${x%o}" "${x#"he"}"
# The standard's own examples (XCU 2.6.2, 2.6.4)
x=file.c; echo "${x%.c}.o"
x=posix/src/std; echo "${x%%/*}"
x=$HOME/src/cmd; echo "${x#$HOME}"
x=/one/two/three; echo "${x##*/}"
unset X; echo "${X:=abc}"
set -- a b c; echo "${3:+posix}" "${#}"
HOME_LEN_IS_A_NUMBER=${#HOME}; case $HOME_LEN_IS_A_NUMBER in *[!0-9]*) echo bad;; *) echo "\${#HOME} is a number";; esac
x=1; echo "$((x += 1)) $x"
echo "$(( 0x1F )) $(( 017 )) $(( -(3 - 5) )) $(( ~0 )) $(( 6 ^ 3 )) $(( 6 & 3 )) $(( 6 | 3 ))"
