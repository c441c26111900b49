/* SPDX-License-Identifier: Apache-2.0 */
/* main.c - placeholder until the CLI lands (being written now). */
int main(void)
{
    return 2;
}
